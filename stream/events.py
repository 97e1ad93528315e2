"""Event schema: Kafka message bytes -> a validated `Event`, or a `DeadLetter` with a reason.

Pure: no I/O. The rules are those of the contract's section 1. The decoder is built for
the hot path: msgspec decodes straight into a typed struct (the fields every event needs
are checked by msgspec in C), and the fields that only some types use stay raw JSON
until the type says they matter, so an `activity` event costs one C-level decode plus a
few comparisons.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Final

import msgspec

#: Event types, in the order their ids are numbered in `TYPE_CODES`.
EVENT_TYPES: Final = ("activity", "signup", "visit", "conversion", "cancellation", "survey")
TYPE_CODES: Final = {name: i for i, name in enumerate(EVENT_TYPES)}
#: The type codes by name (`Event.type_code`), equal to `TYPE_CODES[name]`: plain ints,
#: not an Enum, because the fold compares one per event and an int compare is cheapest.
ACTIVITY: Final = 0
SIGNUP: Final = 1
VISIT: Final = 2
CONVERSION: Final = 3
CANCELLATION: Final = 4
SURVEY: Final = 5

#: Dead-letter reason codes (contract section 1 and 3).
INVALID_JSON: Final = "invalid_json"
INVALID_EVENT: Final = "invalid_event"
LATE: Final = "late"
FUTURE: Final = "future"
#: Not in the contract's list: a message that made the fold itself fail (a bug, never bad input).
PROCESSING_ERROR: Final = "processing_error"
DEAD_LETTER_REASONS: Final = (INVALID_JSON, INVALID_EVENT, LATE, FUTURE, PROCESSING_ERROR)
#: Not in the contract's list: a Kafka record batch that could not be read (unknown codec,
#: corrupt, CRC mismatch), dead-lettered whole in place of its messages.
UNREADABLE_BATCH: Final = "unreadable_batch"


class Unreadable(bytes):
    """The bytes of a record batch that could not be read, standing in the consumed
    values for its messages (at the offset of its last one, `last`): the fold
    dead-letters it as UNREADABLE_BATCH with `detail`. `first` is the first offset of it
    not read before (the batch's base offset, unless some of it was read).

    A bytes object, so it goes through the fold as a value; no JSON value can equal one:
    a batch starts with its base offset, whose first byte is 0 (it is never `{`, and the
    decoders reject it as invalid JSON before the fold replaces its result)."""

    def __new__(cls, data: bytes, detail: str, first: int, last: int) -> Unreadable:
        self = super().__new__(cls, data)
        self.detail = detail
        self.first = first
        self.last = last
        return self

    detail: str
    first: int
    last: int

#: A message of a mapped format (contract section 5) that no rule of its mapping matches:
#: the reason of `engagement_ignored_total` under `otherwise: ignore`, and of a dead
#: letter under `otherwise: dead_letter` (exported, like `processing_error`, once there
#: is one).
UNMAPPED: Final = "unmapped"
IGNORED_REASONS: Final = (UNMAPPED,)

#: How far ahead of the processor's clock an event may be, in milliseconds (5 minutes).
MAX_FUTURE_MS: Final = 5 * 60 * 1000

SURVEY_RANGES: Final = {"nps": (0, 10), "csat": (1, 5)}

#: RFC 3339 split into (date and time to the minute, seconds, fraction, offset).
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
#: (minute, offset) -> epoch ms of that minute, or None when it is not a valid time.
_MINUTES: dict[str, int | None] = {}
_MINUTES_MAX = 100_000
#: `SS` -> its milliseconds, for the seconds 00-59 (60-99 match the regex but are invalid).
_SECOND_MS: Final = {f"{s:02d}": s * 1000 for s in range(60)}
#: A fraction of 1-3 digits -> its milliseconds ("5" is 500, "05" is 50, "005" is 5).
_FRACTION_MS: Final = {
    digits: int(digits.ljust(3, "0"))
    for width in (1, 2, 3) for i in range(10 ** width) for digits in [f"{i:0{width}d}"]
}
_NULL: Final = msgspec.Raw(b"null")


class _Wire(msgspec.Struct, forbid_unknown_fields=False, gc=False):
    """The JSON object as it arrives. Optional fields stay raw: they are ignored unless the
    event's type uses them, and a wrong type in an ignored field must not reject the event."""

    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    type: str
    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    ts: int | str
    campaign: msgspec.Raw = _NULL
    survey: msgspec.Raw = _NULL
    score: msgspec.Raw = _NULL
    props: dict[str, str] | None = None


_decode_wire = msgspec.json.Decoder(_Wire).decode
_decode_wires = msgspec.json.Decoder(list[_Wire]).decode
_decode_raws = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_str = msgspec.json.Decoder(Annotated[str, msgspec.Meta(min_length=1)]).decode
_decode_int = msgspec.json.Decoder(int).decode


class Event(msgspec.Struct, frozen=True, gc=False):
    """A valid event. `ts_ms` is epoch milliseconds (UTC); `type_code` indexes EVENT_TYPES.

    `campaign` is set for visit/conversion, `survey` and `score` for survey events.
    A msgspec Struct rather than a dataclass: one is built per event, and a Struct is
    built several times faster than a frozen dataclass."""

    event_id: str
    type_code: int
    user_id: str
    ts_ms: int
    campaign: str | None = None
    survey: str | None = None
    score: int | None = None
    props: dict[str, str] | None = None

    @property
    def type(self) -> str:
        return EVENT_TYPES[self.type_code]


class DeadLetter(msgspec.Struct, frozen=True, gc=False):
    """Why a message was rejected: `reason` is one of DEAD_LETTER_REASONS (or UNMAPPED),
    `detail` is for humans (it never contains the message itself, only where it went
    wrong)."""

    reason: str
    detail: str


class Ignored(msgspec.Struct, frozen=True, gc=False):
    """A message of a mapped format that becomes no event (contract section 5): it is
    counted under `reason` (one of IGNORED_REASONS), neither folded nor dead-lettered."""

    reason: str


def parse_ts(value: int | str) -> int | None:
    """Event time as epoch milliseconds, or None when `value` is not an accepted `ts`.

    Integers are epoch milliseconds as they are; strings must be RFC 3339 with a `T` and
    an offset. Sub-millisecond digits are truncated."""
    if isinstance(value, int):
        return value
    # Fast path, without the regex, for a minute already in the cache: a cached key is
    # a 16-character minute plus an offset that the regex matched, so when `key` is one
    # the string is that minute, `rest` and that offset, and `rest` must be `:SS` or
    # `:SS.F` with 1-3 fraction digits (the tables hold exactly those spellings).
    # Anything else, even if valid, takes the regex below, which has the last word.
    if value[-1:] in ("Z", "z"):
        key = value[:16] + value[-1:]
        rest = value[16:-1]
    else:
        key = value[:16] + value[-6:]
        rest = value[16:-6]
    base = _MINUTES.get(key)
    if base is not None and rest[:1] == ":":
        second_ms = _SECOND_MS.get(rest[1:3])
        if second_ms is not None:
            if len(rest) == 3:
                return base + second_ms
            if rest[3:4] == ".":
                fraction_ms = _FRACTION_MS.get(rest[4:])
                if fraction_ms is not None:
                    return base + second_ms + fraction_ms
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    minute, sec, frac, offset = m.groups()
    # Calendar arithmetic once per (minute, offset): events are dense in time, so the
    # cache answers nearly every call; seconds and the fraction are added here.
    key = minute + offset
    base = _MINUTES.get(key, -1)
    if base == -1:
        base = _minute_ms(minute, offset)
        if len(_MINUTES) >= _MINUTES_MAX:
            _MINUTES.clear()
        _MINUTES[key] = base
    if base is None:
        return None
    seconds = int(sec)
    if seconds > 59:
        return None
    if frac:
        return base + seconds * 1000 + int(frac[:3].ljust(3, "0"))
    return base + seconds * 1000


def _minute_ms(minute: str, offset: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(f"{minute}:00{offset}".upper())
    except ValueError:
        return None
    # timestamp() is float seconds; go through integer microseconds to avoid rounding.
    return int((parsed - _EPOCH) // _MICROSECOND // 1000)


_EPOCH: Final = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_MICROSECOND: Final = datetime.fromisoformat("1970-01-01T00:00:00.000001+00:00") - _EPOCH


def _optional_field(raw: msgspec.Raw, name: str, decode: object) -> tuple[object, str | None]:
    if bytes(raw) == b"null":
        return None, f"`{name}` is required for this event type"
    try:
        return decode(raw), None  # type: ignore[operator]
    except msgspec.ValidationError as exc:
        return None, f"`{name}`: {exc}"


def decode(value: bytes | None, now_ms: int, max_lateness_ms: int) -> Event | DeadLetter:
    """Decode and validate one Kafka message value.

    `now_ms` is the processor's clock (epoch ms); events older than `now_ms -
    max_lateness_ms` are `late`, newer than `now_ms + MAX_FUTURE_MS` are `future`.
    Never raises for any input."""
    if not value:
        return DeadLetter(INVALID_JSON, "empty or null message value")
    try:
        # msgspec checks UTF-8 inside strings it decodes, but not in skipped fields or in
        # a non-object's string; one C-level pass over non-ASCII input settles it.
        if not value.isascii():
            value.decode("utf-8")
        wire = _decode_wire(value)
    except msgspec.ValidationError as exc:
        # The typed decoder stops at the first schema mismatch, before it would see that
        # the rest is not JSON at all (`[1, 2`, `{}{}`): check syntax on this rare path.
        try:
            msgspec.json.decode(value)
        except (msgspec.DecodeError, RecursionError) as syntax:
            return DeadLetter(INVALID_JSON, str(syntax))
        return DeadLetter(INVALID_EVENT, str(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return DeadLetter(INVALID_JSON, str(exc))
    except RecursionError:
        return DeadLetter(INVALID_JSON, "nesting too deep")
    return _check(wire, now_ms, max_lateness_ms)


def _check(wire: _Wire, now_ms: int, max_lateness_ms: int) -> Event | DeadLetter:
    """The rules after the wire decode, for `decode` and `decode_batch` alike (times in
    epoch ms): type, `ts`, the type's own fields, then lateness."""
    type_code = TYPE_CODES.get(wire.type)
    if type_code is None:
        return DeadLetter(INVALID_EVENT, f"unknown `type` {wire.type[:64]!r}")
    ts_ms = parse_ts(wire.ts)
    if ts_ms is None:
        return DeadLetter(INVALID_EVENT, "`ts` is not RFC 3339 with 'T' and an offset")
    campaign = survey = score = None
    if type_code == SURVEY:
        survey, error = _optional_field(wire.survey, "survey", _decode_str)
        if error is not None:
            return DeadLetter(INVALID_EVENT, error)
        if survey not in SURVEY_RANGES:
            return DeadLetter(INVALID_EVENT, "`survey` must be 'nps' or 'csat'")
        score, error = _optional_field(wire.score, "score", _decode_int)
        if error is not None:
            return DeadLetter(INVALID_EVENT, error)
        low, high = SURVEY_RANGES[survey]
        if not low <= score <= high:  # type: ignore[operator]
            return DeadLetter(INVALID_EVENT, f"`score` of {survey} must be {low}-{high}")
    elif type_code in (VISIT, CONVERSION):
        campaign, error = _optional_field(wire.campaign, "campaign", _decode_str)
        if error is not None:
            return DeadLetter(INVALID_EVENT, error)
    # Time checks come last: an event that is both malformed and late is `invalid_event`.
    if ts_ms < now_ms - max_lateness_ms:
        return DeadLetter(LATE, f"`ts` is more than {max_lateness_ms // 86_400_000} days old")
    if ts_ms > now_ms + MAX_FUTURE_MS:
        return DeadLetter(FUTURE, "`ts` is more than 5 minutes in the future")
    return Event(
        wire.event_id, type_code, wire.user_id, ts_ms,
        campaign=campaign, survey=survey, score=score, props=wire.props,  # type: ignore[arg-type]
    )


#: Types whose events have no type-specific fields: `decode_batch` accepts them inline.
_PLAIN_TYPES: Final = {name: TYPE_CODES[name] for name in ("activity", "signup", "cancellation")}
#: Runs shorter than this are decoded one value at a time: after splitting around a bad
#: value, one more array attempt would cost more than it saves.
_RUN_MIN: Final = 8
#: What JSON counts as whitespace around a value (RFC 8259); `bytes.strip()` would also
#: strip \x0b and \x0c, which JSON rejects.
_JSON_SPACE: Final = b" \t\n\r"


def decode_batch(
    values: Sequence[bytes | None], now_ms: int, max_lateness_ms: int
) -> list[Event | DeadLetter]:
    """`[decode(v, now_ms, max_lateness_ms) for v in values]`, equal for every input, but
    decoded as one JSON array per run of well-formed values (`now_ms` and the lateness
    in epoch ms, as for `decode`).

    msgspec decodes many values in one call far faster than one call per value. A run
    that the array cannot carry exactly (a null or empty value, invalid UTF-8, any decode
    or schema error, values that do not line up with the array's elements) is split in
    halves, so one bad message sends only about log2(n) small runs down the slow path;
    runs shorter than `_RUN_MIN` go through `decode` one by one."""
    out: list[Event | DeadLetter] = []
    _decode_run(values, now_ms, max_lateness_ms, out)
    return out


def _decode_run(values: Sequence[bytes | None], now_ms: int, max_lateness_ms: int,
                out: list[Event | DeadLetter]) -> None:
    wires = _wires(values) if len(values) >= _RUN_MIN else None
    if wires is None:
        if len(values) < _RUN_MIN:
            out.extend([decode(v, now_ms, max_lateness_ms) for v in values])
            return
        half = len(values) // 2
        _decode_run(values[:half], now_ms, max_lateness_ms, out)
        _decode_run(values[half:], now_ms, max_lateness_ms, out)
        return
    # The common case inline (a type without its own fields, `ts` parsed and in the
    # window); anything else goes through `_check`, the one statement of the rules, so the
    # shortcut can only ever accept what `_check` accepts, with the same fields.
    plain = _PLAIN_TYPES.get
    oldest = now_ms - max_lateness_ms
    newest = now_ms + MAX_FUTURE_MS
    append = out.append
    for wire in wires:
        type_code = plain(wire.type)
        if type_code is not None:
            ts = wire.ts
            ts_ms = ts if type(ts) is int else parse_ts(ts)
            if ts_ms is not None and oldest <= ts_ms <= newest:
                # Positional: measurably cheaper than keywords, one per event.
                append(Event(wire.event_id, type_code, wire.user_id, ts_ms,
                             None, None, None, wire.props))
                continue
        append(_check(wire, now_ms, max_lateness_ms))


def _wires(values: Sequence[bytes | None]) -> list[_Wire] | None:
    """The wire structs of `values` decoded as one JSON array, or None when that array
    does not provably carry exactly one value per element (the caller then splits).

    Why the result equals decoding each value alone:
    - UTF-8: the separators `[`, `,` and `]` are ASCII, which can neither continue a
      multi-byte sequence nor be one, so the joined bytes are valid UTF-8 exactly when
      every value is (`decode` checks this for the whole value, skipped fields included).
    - Attribution: a value such as `{"a":"` can open a string that swallows the next
      comma, and a value such as `{},{}` can hold two elements, so a right element count
      alone proves nothing. The array is decoded a second time into raw spans, and each
      span must be exactly as long as its (JSON-whitespace-stripped) value. Then the
      array text holds no whitespace between elements, so by induction from the `[` each
      span starts where its value starts and ends where it ends: each element is its
      value's text, and JSON values parse the same in an array as alone.
    - Surrounding whitespace does not change what a well-formed value decodes to, so the
      values are stripped before the second try rather than sent down the slow path."""
    if len(values) < 2 or not all(values):
        return None
    parts: Sequence[bytes] = values  # type: ignore[assignment]  # all() excluded None
    for attempt in range(2):
        # Brackets on the end values, not around the join: that would copy the whole
        # (megabyte) array twice more, which costs as much as decoding it.
        joined = b",".join([b"[" + parts[0], *parts[1:-1], parts[-1] + b"]"])
        try:
            if not joined.isascii():
                joined.decode("utf-8")
            wires = _decode_wires(joined)
            spans = _decode_raws(joined)
        except Exception:  # whatever went wrong, the split path is always correct
            return None
        lengths = list(map(len, parts))
        if len(wires) == len(spans) == len(parts) and list(map(len, spans)) == lengths:
            return wires
        if attempt:
            return None
        stripped = [v.strip(_JSON_SPACE) for v in parts]
        # Nothing stripped: the mismatch is not whitespace. (A value of whitespace alone
        # strips to nothing, which leaves an empty element: a syntax error next time.)
        if list(map(len, stripped)) == lengths:
            return None
        parts = stripped
    return None
