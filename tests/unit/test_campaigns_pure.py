"""The pure campaign selection (stream/campaigns.py) against the oracle's brute force."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import campaigns
from stream.app import open_store
from stream.figures import RawFigures, compute
from stream.settings import SettingsError, load
from tests.support.oracle import capped_conversion_ratio

LONG = "x" * 129


def ratios(visits: dict[str, int], conversions: dict[str, int], n: int) -> dict[str, float]:
    return campaigns.ratios(Counter(visits), Counter(conversions), n)


def test_top_by_visits_then_name() -> None:
    visits = {"b": 3, "a": 3, "c": 5, "d": 1, "e": 3}
    assert campaigns.top(visits, 3) == ["c", "a", "b"]
    assert campaigns.top(visits, 10) == ["c", "a", "b", "e", "d"]
    assert campaigns.top(visits, 0) == []


def test_rest_summed_into_other_then_divided() -> None:
    visits = {"a": 10, "b": 4, "c": 4, "d": 2}
    conversions = {"a": 1, "b": 2, "c": 1, "d": 2}
    got = ratios(visits, conversions, 2)
    # a and b (b before c by name); c and d summed: (1 + 2) / (4 + 2)
    assert got == {"a": 0.1, "b": 0.5, "other": 0.5}


def test_long_name_and_real_other_always_count_as_other() -> None:
    visits = {LONG: 50, "other": 40, "x" * 128: 1, "a": 2}
    conversions = {LONG: 5, "other": 4, "a": 1}
    got = ratios(visits, conversions, 500)
    assert got == {"x" * 128: 0.0, "a": 0.5, "other": 9 / 90}
    assert campaigns.stored_name(LONG) == "other"
    assert campaigns.stored_name("x" * 128) == "x" * 128
    # characters, not bytes: 128 two-byte characters are a name of their own
    assert campaigns.stored_name("é" * 128) == "é" * 128


def test_other_without_visits_is_not_exported() -> None:
    # a campaign with conversions and no visit joins `other`; `other` has no visit here
    assert ratios({"a": 2}, {"a": 1, "b": 3}, 500) == {"a": 0.5}
    # ... and with visits there, its conversions count there
    assert ratios({"a": 2, "c": 1}, {"a": 1, "b": 3}, 1) == {"a": 0.5, "other": 3.0}
    assert ratios({}, {}, 500) == {}


def test_compute_applies_the_cap() -> None:
    raw = RawFigures(today=100, campaign_max_series=1,
                     window_counters={"v:a": 2, "v:b": 1, "c:a": 1, "c:b": 1})
    assert compute(raw)["conversion_ratio"] == {"a": 0.5, "other": 1.0}


def test_shard_of_is_stable_and_in_range() -> None:
    assert campaigns.shard_of("spring", 1) == 0
    shards = {campaigns.shard_of(f"c{i}", 7) for i in range(200)}
    assert shards == set(range(7))
    assert campaigns.shard_of("spring", 7) == campaigns.shard_of("spring", 7)


names = st.one_of(st.sampled_from(["a", "b", "other", "é", "z" * 129, "ab", "ba"]),
                  st.text(max_size=3), st.text(min_size=127, max_size=130))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, st.integers(0, 6)), st.dictionaries(names, st.integers(0, 6)),
       st.integers(0, 8))
def test_same_as_brute_force(visits: dict[str, int], conversions: dict[str, int],
                             n: int) -> None:
    want = capped_conversion_ratio(Counter(visits), Counter(conversions), n)
    got = ratios(visits, conversions, n)
    assert list(got) == list(want)
    assert got == pytest.approx(want)
    assert len(got) <= n + 1


def test_setting_is_checked_and_reaches_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_CAMPAIGN_MAX_SERIES", "-1")
    with pytest.raises(SettingsError, match=r"^bad setting STREAM_CAMPAIGN_MAX_SERIES: "):
        load()
    assert load({"campaign_max_series": 7}).campaign_max_series == 7
    monkeypatch.delenv("STREAM_CAMPAIGN_MAX_SERIES")
    assert load().campaign_max_series == campaigns.DEFAULT_MAX_SERIES == 500
    store = open_store(load({"campaign_max_series": 3}))  # no connection is made yet
    assert store.campaign_max_series == 3
    store.close()
