"""`send`'s completion of test messages: a JSON object gets an event_id and ts when it
has none, and its user_id as key; anything else goes as it is."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from stream.send import complete

NOW = datetime(2026, 11, 22, 10, 0, 5, tzinfo=UTC)


def test_an_object_gets_an_id_and_the_time() -> None:
    value, key = complete('{"type": "activity", "user_id": "me"}', NOW)
    event = json.loads(value)
    assert event["ts"] == "2026-11-22T10:00:05Z"
    assert event["event_id"].startswith("test-") and len(event["event_id"]) > 20
    assert key == b"me"
    again, _ = complete('{"type": "activity", "user_id": "me"}', NOW)
    assert json.loads(again)["event_id"] != event["event_id"]


def test_given_fields_are_kept() -> None:
    given = {"event_id": "e1", "type": "survey", "user_id": "u", "ts": 1, "score": 9}
    value, key = complete(json.dumps(given), NOW)
    assert json.loads(value) == given and key == b"u"


def test_anything_else_is_sent_as_it_is() -> None:
    assert complete("not json", NOW) == (b"not json", None)
    assert complete("[1, 2]", NOW) == (b"[1, 2]", None)
    value, key = complete('{"user_id": 7}', NOW)
    assert key is None and json.loads(value)["user_id"] == 7
