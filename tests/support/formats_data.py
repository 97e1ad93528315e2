"""Generated streams of every shipped preset, with what each message must become.

Each stream is a section-1 dataset of :mod:`tests.support.dataset` re-dressed in a
preset's shape by hand-written encoders (from the projects' public field names, not from
the mapping files), plus hand-made cases: anonymous-only users, empty and null user ids,
messages no rule maps, invalid mapped values. For every message the generator records
what the contract says it becomes, written out from the event it was made from: the
section-1 object (handed to the oracle, which validates and folds it like a native
message), the original bytes (not JSON, or not an object: dead-lettered as in section 1),
``IGNORED`` or ``UNMAPPED``. Nothing here imports ``stream``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import dataset as ds
from . import oracle

IGNORED = "ignored"
UNMAPPED = "unmapped"
Expect = bytes | None | str
Message = tuple[str, bytes | None, bytes | None]


@dataclass
class MappedStream:
    """Messages on one topic and, in the same order, what each must become."""

    preset: str
    messages: list[Message] = field(default_factory=list)
    expected: list[Expect] = field(default_factory=list)

    def add(self, topic: str, key: bytes | None, value: bytes | None, expect: Expect) -> None:
        self.messages.append((topic, key, value))
        self.expected.append(expect)


def native_values(streams: list[MappedStream]) -> list[bytes | None]:
    """The section-1 messages the streams must become (for the oracle), in order."""
    return [e for s in streams for e in s.expected if e not in (IGNORED, UNMAPPED)]


def expected_figures(streams: list[MappedStream], data: ds.Dataset) -> dict[str, Any]:
    """The oracle's figures of what the streams become, with ignored and unmapped counts."""
    want = oracle.compute_figures(native_values(streams), data.now)
    want.update(oracle.previous_day_figures(native_values(streams), data.now))
    expected = [e for s in streams for e in s.expected]
    want["ignored_total"] = {"unmapped": expected.count(IGNORED)}
    if expected.count(UNMAPPED):
        want["dead_letter_total"]["unmapped"] = expected.count(UNMAPPED)
    return want


def _section1(obj: dict[str, Any], keep_props: Callable[[dict[str, str]], dict[str, str]]
              ) -> bytes:
    out = {k: obj[k] for k in ("event_id", "type", "user_id", "ts", "campaign", "survey",
                               "score") if k in obj}
    props = obj.get("props")
    if isinstance(props, dict):
        kept = keep_props(props)
        if kept:
            out["props"] = kept
    return json.dumps(out).encode()


def _no_props(props: dict[str, str]) -> dict[str, str]:
    return {}


# -- encoders: a section-1 event -> the preset's message (None: the preset has no such
#    event) and the props the preset keeps --------------------------------------------
def _segment(e: dict[str, Any], rng: random.Random, ts_key: str = "timestamp"
             ) -> dict[str, Any] | None:
    msg: dict[str, Any] = {"messageId": e["event_id"], "userId": e["user_id"],
                           ts_key: e["ts"], "context": {"library": {"name": "x"}},
                           "properties": {}}
    t = e["type"]
    if t == "activity":
        kind = rng.choice(["track", "page", "screen"])
        msg["type"] = kind
        if kind == "track":
            msg["event"] = rng.choice(["Video Played", "Order Completed", "Search"])
    elif t in ("signup", "cancellation"):
        msg["type"] = "track"
        msg["event"] = "Signed Up" if t == "signup" else "Subscription Cancelled"
    elif t == "conversion":
        msg.update(type="track", event="Order Completed")
        msg["context"]["campaign"] = {"name": e["campaign"], "source": "mail"}
    elif t == "visit":
        msg["type"] = "page"
        msg["context"]["campaign"] = {"name": e["campaign"], "medium": "cpc"}
    else:
        msg.update(type="track", event="Survey Responded",
                   properties={"survey": e["survey"], "score": e["score"]})
    return msg


def _rudderstack(e: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    # RudderStack's own time is `originalTimestamp`; `timestamp` is often there too
    msg = _segment(e, rng, ts_key="originalTimestamp")
    assert msg is not None
    msg["channel"] = "web"
    if rng.random() < 0.5:
        msg["timestamp"] = msg["originalTimestamp"]
    return msg


def _posthog(e: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    t = e["type"]
    props: dict[str, Any] = {"$lib": "web"}
    if isinstance(e.get("props"), dict) and "platform" in e["props"]:
        props["$os"] = e["props"]["platform"]
    names = {"activity": rng.choice(["$pageview", "$screen", "$autocapture"]),
             "signup": "user signed up", "cancellation": "subscription cancelled",
             "conversion": "purchase completed", "visit": "$pageview"}
    if t not in names:
        return None  # no survey event in the preset
    if t in ("conversion", "visit"):
        props["utm_campaign"] = e["campaign"]
    return {"uuid": e["event_id"], "event": names[t], "distinct_id": e["user_id"],
            "timestamp": e["ts"], "properties": props, "api_key": "phc_x"}


def _posthog_props(props: dict[str, str]) -> dict[str, str]:
    return {"os": props["platform"]} if "platform" in props else {}


def _snowplow(e: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    t = e["type"]
    msg: dict[str, Any] = {"event_id": e["event_id"], "user_id": e["user_id"],
                           "derived_tstamp": e["ts"], "collector_tstamp": "2000-01-01T00:00:00Z",
                           "app_id": "shop", "platform": "web", "v_tracker": "js-3"}
    if t == "activity":
        msg["event"] = rng.choice(["page_view", "page_ping", "struct", "unstruct"])
    elif t == "visit":
        msg.update(event="page_view", mkt_campaign=e["campaign"], mkt_medium="cpc")
    elif t == "conversion":
        msg.update(event="transaction", mkt_campaign=e["campaign"], tr_total=9.5)
    else:
        return None
    return msg


def _snowplow_props(props: dict[str, str]) -> dict[str, str]:
    return {"platform": "web", "app": "shop"}


def _cloudevents(e: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    data = {k: e[k] for k in ("type", "user_id", "campaign", "survey", "score", "props")
            if k in e}
    msg: dict[str, Any] = {"specversion": "1.0", "id": e["event_id"], "source": "/web",
                           "type": "com.example.engagement", "datacontenttype":
                           "application/json", "data": data}
    if isinstance(e["ts"], str):
        msg["time"] = e["ts"]
    else:
        data["ts"] = e["ts"]
    if rng.random() < 0.5:  # the user as the CloudEvents subject only
        msg["subject"] = data.pop("user_id")
    return msg


def _cloudevents_props(props: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in props.items() if k in ("plan", "platform", "country")
            and isinstance(v, str)}


PRESETS: dict[str, tuple[Callable[[dict[str, Any], random.Random], dict[str, Any] | None],
                         Callable[[dict[str, str]], dict[str, str]]]] = {
    "segment": (_segment, _no_props),
    "rudderstack": (_rudderstack, _no_props),
    "posthog": (_posthog, _posthog_props),
    "snowplow": (_snowplow, _snowplow_props),
    "cloudevents": (_cloudevents, _cloudevents_props),
}


def mapped_stream(preset: str, data: ds.Dataset, topic: str, seed: int) -> MappedStream:
    """`data` re-dressed as `preset` messages on `topic`, ids prefixed with the preset
    (one namespace across topics: no accidental duplicates), plus hand-made cases."""
    encode, keep = PRESETS[preset]
    rng = random.Random(seed)
    out = MappedStream(preset)
    for _, key, value in data.messages:
        checked = oracle.check(value, data.now)
        try:
            obj = json.loads(value) if value else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            out.add(topic, key, value, value)  # not JSON, or not an object: as in section 1
            continue
        if checked.event is None and checked.reason not in ("late", "future"):
            continue  # a malformed section-1 object: the hand-made cases cover these
        obj = dict(obj)
        obj["event_id"] = f"{preset}:{obj['event_id']}"
        msg = encode(obj, rng)
        if msg is None:
            continue
        out.add(topic, key, json.dumps(msg).encode(), _section1(obj, keep))
    _hand_made(out, preset, topic, data, rng)
    return out


def _hand_made(out: MappedStream, preset: str, topic: str, data: ds.Dataset,
               rng: random.Random) -> None:
    now_ms = oracle.to_ms(data.now)
    ts = now_ms - 30 * 60 * 1000
    encode, keep = PRESETS[preset]

    def event(n: int, etype: str, user: str, **extra: Any) -> dict[str, Any]:
        return {"event_id": f"{preset}:hand-{n}", "type": etype, "user_id": user, "ts": ts,
                **extra}

    def add(msg: dict[str, Any], expect: Expect) -> None:
        out.add(topic, b"hand", json.dumps(msg).encode(), expect)

    # anonymous-only users (their events count under the anonymous id); signups where the
    # preset has them, so an exact figure (customers) tells whose they are
    for n in range(5):
        e = event(n, "activity" if preset == "snowplow" else "signup", f"anon-{preset}-{n}")
        msg = encode(e, rng)
        assert msg is not None
        if preset in ("segment", "rudderstack"):
            del msg["userId"]
            msg["anonymousId"] = e["user_id"]
            if n == 1:
                msg["userId"] = ""  # an empty userId is not present
            if n == 2:
                msg["userId"] = None
        elif preset == "posthog":
            del msg["distinct_id"]
            msg["properties"]["distinct_id"] = e["user_id"]
        elif preset == "snowplow":
            del msg["user_id"]
            msg["domain_userid"] = e["user_id"]
            if n == 1:
                msg["user_id"] = ""
        else:
            msg.pop("subject", None)
            msg["data"].pop("user_id", None)
            msg["subject"] = e["user_id"]
        add(msg, _section1(e, keep))
    # messages no rule maps
    unmapped: dict[str, list[dict[str, Any]]] = {
        "segment": [{"type": "identify", "userId": "u", "messageId": "i1"},
                    {"type": "group", "groupId": "g"}, {"type": "alias", "previousId": "p"},
                    {"type": "Track", "event": "Signed Up"}],
        "posthog": [{"event": "$identify", "distinct_id": "u"},
                    {"event": "$set", "distinct_id": "u"}, {"event": "Survey sent"}],
        "snowplow": [{"event": "transaction_item", "event_id": "x"}, {"event": "ad_impression"}],
        "cloudevents": [{"specversion": "0.3", "id": "x", "data": {"type": "activity"}},
                        {"specversion": "1.0", "id": "y", "data": {"type": "purchase"}}],
    }
    unmapped["rudderstack"] = unmapped["segment"]
    otherwise = UNMAPPED if preset == "cloudevents" else IGNORED
    for msg in unmapped[preset]:
        add(msg, otherwise)
    # invalid mapped values: built by the first rule that holds, then invalid
    bad_type = "activity" if preset == "snowplow" else "signup"
    msg = encode(event(10, bad_type, "x"), rng)
    assert msg is not None
    user_key = {"segment": ("userId",), "rudderstack": ("userId",),
                "posthog": ("distinct_id",), "snowplow": ("user_id",),
                "cloudevents": ("subject",)}[preset]
    if preset == "cloudevents":
        msg["data"].pop("user_id", None)
    msg[user_key[0]] = 7  # present, of the wrong JSON type: used, so invalid
    add(msg, json.dumps({"event_id": f"{preset}:hand-10", "type": bad_type, "user_id": 7,
                         "ts": ts}).encode())
    if preset in ("segment", "rudderstack", "cloudevents"):
        e = event(11, "survey", "surveyed", survey="nps", score=9)
        msg = encode(e, rng)
        assert msg is not None
        if preset == "cloudevents":
            msg["data"]["score"] = "9"
        else:
            msg["properties"]["score"] = "9"
        add(msg, json.dumps({**{k: v for k, v in e.items()}, "score": "9"}).encode())
    if preset in ("segment", "rudderstack", "posthog", "snowplow", "cloudevents"):
        e = event(12, "activity", "no-time")
        msg = encode(e, rng)
        assert msg is not None
        for k in ("timestamp", "originalTimestamp", "derived_tstamp", "collector_tstamp",
                  "time"):
            msg.pop(k, None)
        if preset == "cloudevents":
            msg["data"].pop("ts", None)
        add(msg, json.dumps({k: v for k, v in e.items() if k != "ts"}).encode())
