"""The matcher: one message of a mapped format -> an `Event`, `Ignored` or `DeadLetter`.

Pure: no I/O. `Mapper.explain` is the definition (contract section 5), written to be
read: the message is decoded as generic JSON, each path is looked up by walking the
objects, the first rule whose `match` holds decides the type, the event it builds is
handed to `events.decode` as a section-1 object, so it is validated exactly as a native
event is.

`Mapper.decode_batch` is the same function, faster: a mapping's paths are compiled into
a typed msgspec decoder (nested structs holding only the keys the mapping names, so
msgspec skips everything else in C) and its rules into a few set lookups; an event of a
type without type-specific fields is accepted inline with the checks `events` applies to
it. Anything that path cannot settle exactly (a typed decode that fails, an event it
cannot accept inline) goes through the definition. tests/unit/test_formats_pure.py checks
the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ..events import (
    INVALID_EVENT,
    INVALID_JSON,
    MAX_FUTURE_MS,
    TYPE_CODES,
    UNMAPPED,
    DeadLetter,
    Event,
    Ignored,
    decode,
    parse_ts,
)
from .spec import FIELDS, Rule, Spec

#: A path that does not exist (msgspec's own marker of an absent field, so the typed
#: decoder's defaults need no translation).
MISSING: Final = msgspec.UNSET
Item = Event | DeadLetter | Ignored


def present(value: Any) -> bool:
    """Section 5: a value is present when its path exists and it is neither null nor ""."""
    return value is not MISSING and value is not None and not (type(value) is str and not value)


def lookup(obj: Any, parts: tuple[str, ...]) -> Any:
    """The value at a path of keys in nested JSON objects, or MISSING."""
    for key in parts:
        if type(obj) is not dict:
            return MISSING
        obj = obj.get(key, MISSING)
        if obj is MISSING:
            return MISSING
    return obj


def _equal_test(members: tuple[Any, ...]) -> Callable[[Any], bool]:
    """A test that holds for a value equal to one of `members`, JSON types kept apart:
    `"1"` is not 1 and `true` is not 1 (Python's `True == 1` must not leak in); 1 and
    1.0 are the same JSON number."""
    strs = frozenset(m for m in members if type(m) is str)
    nums = frozenset(m for m in members if type(m) is int or type(m) is float)
    bools = frozenset(m for m in members if type(m) is bool)
    null = any(m is None for m in members)

    def test(value: Any) -> bool:
        t = type(value)
        if t is str:
            return value in strs
        if t is int or t is float:
            return value in nums
        if t is bool:
            return value in bools
        return null and value is None

    return test


def _present_test(wanted: bool) -> Callable[[Any], bool]:
    if wanted:
        return present
    return lambda value: not present(value)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message becomes, for `check-format`: the item, the rule that decided
    (None: no rule held, or the message was not a JSON object) and the section-1 object
    the rule built (None when none was built)."""

    item: Item
    rule: Rule | None
    event: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: Rule
    type_code: int
    tests: tuple[tuple[int, Callable[[Any], bool]], ...]
    #: field -> path indices (first present wins), for the fields the rule takes
    sources: tuple[tuple[str, tuple[int, ...]], ...]
    constants: tuple[tuple[str, Any], ...]
    #: the paths of the three fields every event needs, for the inline accept
    id_src: tuple[int, ...]
    user_src: tuple[int, ...]
    ts_src: tuple[int, ...]
    plain: bool


class Mapper:
    """A loaded mapping, ready to decode messages. `name` is the format as selected
    (`segment`, or the path of the file)."""

    def __init__(self, spec: Spec, name: str | None = None, compiled_shape: int = 0) -> None:
        self.spec = spec
        self.name = name or spec.source
        #: the shape stream/_fastfold.c folds of this mapping's messages (0: none); only
        #: the shipped `segment` preset has one (1), as the compiled code knows its rules
        self.compiled_shape = compiled_shape
        paths: dict[str, int] = {}

        def index(path: str) -> int:
            return paths.setdefault(path, len(paths))

        rules: list[_CompiledRule] = []
        for rule in spec.rules:
            tests = []
            for path, (kind, data) in rule.match:
                test = _equal_test(data) if kind == "eq" else _present_test(data)
                tests.append((index(path), test))
            sources = tuple((name, tuple(index(p) for p in spec.paths_of(rule, name)))
                            for name in FIELDS if spec.paths_of(rule, name))
            src = dict(sources)
            rules.append(_CompiledRule(
                rule, TYPE_CODES[rule.type], tuple(tests), sources,
                tuple(rule.constants.items()), src["event_id"], src["user_id"], src["ts"],
                rule.type in ("activity", "signup", "cancellation")))
        self._props = tuple((name, tuple(index(p) for p in ps))
                            for name, ps in spec.props.items())
        self._rules = tuple(rules)
        self._by_number = {r.rule.number: r for r in rules}
        self.paths: tuple[str, ...] = tuple(paths)
        self._parts = tuple(tuple(p.split(".")) for p in self.paths)
        self._typed = _typed_extractor(self.paths)
        self._decide_fast = _compiled_decide(rules, {p: i for i, p in enumerate(self.paths)})

    # -- the definition ---------------------------------------------------------------
    def explain(self, value: bytes | None, now_ms: int, max_lateness_ms: int) -> Outcome:
        """What `value` becomes, and why (the definition of section 5)."""
        if not value:
            return Outcome(DeadLetter(INVALID_JSON, "empty or null message value"), None, None)
        try:
            if not value.isascii():
                value.decode("utf-8")
            obj = msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            # A number beyond what msgspec holds (1e999, a 5000-digit integer) is still
            # JSON: section 1 accepts it in a field it ignores, so a mapping does too.
            obj = _beyond_range(value) if "out of range" in str(exc) else None
            if obj is None:
                return Outcome(DeadLetter(INVALID_JSON, str(exc)), None, None)
        except UnicodeDecodeError as exc:
            return Outcome(DeadLetter(INVALID_JSON, str(exc)), None, None)
        except RecursionError:
            return Outcome(DeadLetter(INVALID_JSON, "nesting too deep"), None, None)
        if type(obj) is not dict:
            return Outcome(DeadLetter(INVALID_EVENT, "the message is not a JSON object"),
                           None, None)
        values = tuple(lookup(obj, parts) for parts in self._parts)
        return self._outcome(values, now_ms, max_lateness_ms)

    def _decide(self, values: Sequence[Any]) -> _CompiledRule | None:
        """The first rule whose every test holds (a missing `match` always holds)."""
        for compiled in self._rules:
            for i, test in compiled.tests:
                if not test(values[i]):
                    break
            else:
                return compiled
        return None

    def _outcome(self, values: Sequence[Any], now_ms: int, max_lateness_ms: int) -> Outcome:
        compiled = self._decide(values)
        if compiled is None:
            if self.spec.otherwise == "dead_letter":
                return Outcome(DeadLetter(UNMAPPED, f"no rule of {self.name} matches"),
                               None, None)
            return Outcome(Ignored(UNMAPPED), None, None)
        event, origin = self._build(compiled, values)
        try:
            text = msgspec.json.encode(event)
        except (TypeError, OverflowError, ValueError) as exc:  # a number beyond range
            return Outcome(DeadLetter(INVALID_EVENT, _annotate(
                f"a value out of range: {exc}", compiled.rule, origin, self.spec.paths_of)),
                compiled.rule, event)
        item = decode(text, now_ms, max_lateness_ms)
        if isinstance(item, DeadLetter) and item.reason == INVALID_EVENT:
            item = DeadLetter(INVALID_EVENT, _annotate(item.detail, compiled.rule, origin,
                                                       self.spec.paths_of))
        return Outcome(item, compiled.rule, event)

    def _build(self, compiled: _CompiledRule, values: Sequence[Any]) -> (
        tuple[dict[str, Any], dict[str, str]]
    ):
        """The section-1 object `compiled` builds from `values`, and field -> the path
        its value came from."""
        paths = self.paths
        event: dict[str, Any] = {"type": compiled.rule.type}
        origin: dict[str, str] = {}
        for name, sources in compiled.sources:
            for i in sources:
                v = values[i]
                if present(v):
                    # a present value of the wrong JSON type is used (then invalid),
                    # never skipped for the next path
                    event[name] = v
                    origin[name] = paths[i]
                    break
        for name, v in compiled.constants:
            event[name] = v
            origin[name] = "set"
        props = self._props_of(values)
        if props:
            event["props"] = props
        return event, origin

    def _props_of(self, values: Sequence[Any]) -> dict[str, str] | None:
        props: dict[str, str] | None = None
        for name, sources in self._props:
            for i in sources:
                v = values[i]
                if present(v):
                    if type(v) is str:  # only string values are kept
                        if props is None:
                            props = {}
                        props[name] = v
                    break
        return props

    # -- the fast path ----------------------------------------------------------------
    def decode(self, value: bytes | None, now_ms: int, max_lateness_ms: int) -> Item:
        return self.decode_batch([value], now_ms, max_lateness_ms)[0]

    def decode_batch(self, values: Sequence[bytes | None], now_ms: int,
                     max_lateness_ms: int) -> list[Item]:
        """`[self.explain(v, ...).item for v in values]`, equal for every input, faster."""
        typed = self._typed
        if typed is None:
            return [self.explain(v, now_ms, max_lateness_ms).item for v in values]
        decode_typed, extract = typed
        decide = self._decide_fast
        props_of = self._props_of
        oldest = now_ms - max_lateness_ms
        newest = now_ms + MAX_FUTURE_MS
        out: list[Item] = []
        append = out.append
        ignored = Ignored(UNMAPPED) if self.spec.otherwise == "ignore" else None
        for value in values:
            try:
                # the definition's UTF-8 check: msgspec checks only the strings it keeps
                if value is None:
                    raise ValueError
                if not value.isascii():
                    value.decode("utf-8")
                vals = extract(decode_typed(value))
            except Exception:  # whatever went wrong, the definition decides
                append(self.explain(value, now_ms, max_lateness_ms).item)
                continue
            compiled = decide(vals)
            if compiled is None:
                append(ignored if ignored is not None
                       else self._outcome(vals, now_ms, max_lateness_ms).item)
                continue
            if compiled.plain:
                # Inline: the checks `events` applies to an event of a type without its
                # own fields; anything else (or any doubt) goes to the definition.
                event_id = _first(vals, compiled.id_src)
                user_id = _first(vals, compiled.user_src)
                ts = _first(vals, compiled.ts_src)
                if (type(event_id) is str and len(event_id) <= 128
                        and type(user_id) is str and len(user_id) <= 256):
                    ts_ms = ts if type(ts) is int else (
                        parse_ts(ts) if type(ts) is str else None)
                    if ts_ms is not None and oldest <= ts_ms <= newest:
                        append(Event(event_id, compiled.type_code, user_id, ts_ms,
                                     None, None, None, props_of(vals)))
                        continue
            append(self._outcome(vals, now_ms, max_lateness_ms).item)
        return out

    def rule(self, number: int) -> Rule:
        return self._by_number[number].rule


def _beyond_range(value: bytes) -> Any:
    """`value` decoded by the standard library when msgspec finds a number out of its
    range, or None when it is not JSON after all (NaN and Infinity are not JSON, nor is
    a string with a lone UTF-16 surrogate, which msgspec refuses too)."""

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def big_int(digits: str) -> Any:
        # beyond Python's own conversion limit: no field takes such a number anyway
        return int(digits) if len(digits) < 4000 else float("inf")

    try:
        obj = json.loads(value, parse_constant=no_constant, parse_int=big_int)
    except (ValueError, RecursionError):
        return None
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if any("\ud800" <= ch <= "\udfff" for ch in x):
                return None
        elif isinstance(x, dict):
            stack += x.keys()
            stack += x.values()
        elif isinstance(x, list):
            stack += x
    return obj


def _first(values: Sequence[Any], sources: tuple[int, ...]) -> Any:
    """The first present value of `sources` (MISSING when none is): present means not
    null and not "", so a value returned here is never empty text."""
    for i in sources:
        v = values[i]
        if v is not MISSING and v is not None and v != "":
            return v
    return MISSING


def _annotate(detail: str, rule: Rule, origin: dict[str, str],
              paths_of: Callable[[Rule, str], tuple[str, ...]]) -> str:
    """`detail` of an invalid event, with the message's path behind the field that
    failed (or, for a missing field, the paths that were tried)."""
    for name in ("event_id", "user_id", "ts", "campaign", "survey", "score", "props"):
        if f"`{name}`" in detail or f"`$.{name}" in detail:
            if name in origin:
                source = origin[name]
                where = "set by the rule" if source == "set" else f"from `{source}`"
                return f"{detail} ({name} {where}, {rule.label})"
            tried = paths_of(rule, name)
            if tried:
                return (f"{detail} (no present value at {', '.join(f'`{p}`' for p in tried)}, "
                        f"{rule.label})")
            return f"{detail} ({rule.label})"
    return f"{detail} ({rule.label})"


def _compiled_decide(rules: list[_CompiledRule], index: dict[str, int]) -> (
    Callable[[Sequence[Any]], _CompiledRule | None]
):
    """`Mapper._decide` as one generated function: the tests inline (no call per test),
    each path's value and type read once. Same results for every input (the property
    test in tests/unit/test_formats_pure.py holds the two together)."""
    namespace: dict[str, Any] = {"UNSET": MISSING, "R": rules}
    used = sorted({index[path] for r in rules for path, _ in r.rule.match})
    lines = ["def decide(v):"]
    lines += [f"    x{i} = v[{i}]; t{i} = type(x{i})" for i in used]
    for n, compiled in enumerate(rules):
        conds = []
        for k, (path, (kind, data)) in enumerate(compiled.rule.match):
            i = index[path]
            if kind == "present":
                held = (f"(x{i} is not UNSET and x{i} is not None and "
                        f"not (t{i} is str and not x{i}))")
                conds.append(held if data else f"not {held}")
                continue
            name = f"M{n}_{k}"
            strs = frozenset(m for m in data if type(m) is str)
            nums = frozenset(m for m in data if type(m) is int or type(m) is float)
            bools = frozenset(m for m in data if type(m) is bool)
            alts = []
            if strs:
                namespace[name + "s"] = strs
                alts.append(f"(t{i} is str and x{i} in {name}s)")
            if nums:
                namespace[name + "n"] = nums
                alts.append(f"((t{i} is int or t{i} is float) and x{i} in {name}n)")
            if bools:
                namespace[name + "b"] = bools
                alts.append(f"(t{i} is bool and x{i} in {name}b)")
            if any(m is None for m in data):
                alts.append(f"x{i} is None")
            conds.append("(" + " or ".join(alts) + ")")
        lines.append(f"    if {' and '.join(conds) or 'True'}:")
        lines.append(f"        return R[{n}]")
    lines.append("    return None")
    exec("\n".join(lines), namespace)  # generated from a checked mapping
    return namespace["decide"]  # type: ignore[no-any-return]


def _typed_extractor(paths: tuple[str, ...]) -> (
    tuple[Callable[[bytes], Any], Callable[[Any], tuple[Any, ...]]] | None
):
    """A typed decoder of the objects the paths walk through and a function from its
    result to the paths' values, or None when the paths cannot be typed (a path that is
    also the prefix of another one)."""
    tree: dict[str, Any] = {}
    for i, path in enumerate(paths):
        node = tree
        parts = path.split(".")
        for key in parts[:-1]:
            child = node.setdefault(key, {})
            if isinstance(child, int):
                return None
            node = child
        if parts[-1] in node:
            return None  # a leaf that is also an object on another path
        node[parts[-1]] = i
    namespace: dict[str, Any] = {"UNSET": MISSING}
    lines: list[str] = []
    types: dict[int, type] = {}

    def struct(node: dict[str, Any]) -> type:
        fields: list[tuple[str, Any, Any]] = []
        rename: dict[str, str] = {}
        for n, (key, child) in enumerate(node.items()):
            fname = f"f{n}"
            rename[fname] = key
            kind: Any = object if isinstance(child, int) else struct(child) | None
            fields.append((fname, kind, MISSING))
        made = msgspec.defstruct(f"_Mapped{len(types)}", fields, rename=rename,
                                 forbid_unknown_fields=False, gc=False)
        types[id(node)] = made
        return made

    def leaves(node: Any) -> list[int]:
        if isinstance(node, int):
            return [node]
        return [i for child in node.values() for i in leaves(child)]

    def code(node: dict[str, Any], var: str, indent: str) -> None:
        for n, child in enumerate(node.values()):
            if isinstance(child, int):
                lines.append(f"{indent}p{child} = {var}.f{n}")
                continue
            # An object on the way: anything else there (null, or absent) means every
            # path through it is missing; a string or array failed the typed decode.
            sub = f"{var}_{n}"
            namespace[f"T{sub}"] = types[id(child)]
            lines.append(f"{indent}{sub} = {var}.f{n}")
            lines.append(f"{indent}if type({sub}) is T{sub}:")
            code(child, sub, indent + "    ")
            lines.append(f"{indent}else:")
            lines.extend(f"{indent}    p{i} = UNSET" for i in leaves(child))

    root = struct(tree)
    lines.append("def extract(o):")
    code(tree, "o", "    ")
    lines.append("    return (" + "".join(f"p{i}, " for i in range(len(paths))) + ")")
    exec("\n".join(lines), namespace)  # generated from checked paths only
    return msgspec.json.Decoder(root).decode, namespace["extract"]
