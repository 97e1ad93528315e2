"""Pure: campaign cardinality, which campaigns get a series of their own.

`engagement_conversion_ratio{campaign}` (and its `previous_day_` twin) is exported for at
most `STREAM_CAMPAIGN_MAX_SERIES` campaigns: those with the most visits over the window,
ties by name. Every other campaign is summed into `campaign="other"` (its conversions and
its visits summed, then divided), so a stream of any number of campaign names puts at most
`max_series + 1` series on Prometheus.

Two names never get a series of their own and always count as `other`:
- a name longer than NAME_MAX characters: the fold keeps its counts under `other`, so
  such a name is never stored at all;
- a real campaign named `other`: it joins the bucket of that name (as a segment value
  spelled `other` does), rather than taking a slot and making two series of one label.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Mapping

#: The label of the campaigns that have no series of their own.
OTHER = "other"
#: Longer campaign names count as `other` (and are never stored).
NAME_MAX = 128
#: Default of STREAM_CAMPAIGN_MAX_SERIES.
DEFAULT_MAX_SERIES = 500


def stored_name(campaign: str) -> str:
    """The name a visit's or conversion's counters are kept under."""
    return OTHER if len(campaign) > NAME_MAX else campaign


def shard_of(campaign: str, shards: int) -> int:
    """The shard that keeps a campaign's counters: all of one campaign's in one shard, so
    each shard's top campaigns hold the top campaigns of the whole store."""
    return zlib.crc32(campaign.encode(), 0xCA) % shards if shards > 1 else 0


def _rank(item: tuple[str, int]) -> tuple[int, str]:
    """Most visits first, then by name."""
    return -item[1], item[0]


def top(visits: Mapping[str, int], max_series: int) -> list[str]:
    """The campaigns with a series of their own, best first: at most `max_series` with at
    least one visit, most visits first, ties by name; never `other` or a long name.
    O(n log max_series) time, O(max_series) memory beyond the input."""
    eligible = ((name, n) for name, n in visits.items()
                if n > 0 and name != OTHER and len(name) <= NAME_MAX)
    return [name for name, _ in heapq.nsmallest(max_series, eligible, key=_rank)]


def capped(visits: Mapping[str, int], conversions: Mapping[str, int],
           max_series: int) -> dict[str, tuple[int, int]]:
    """label -> (conversions, visits): the top campaigns as they are, and `other` with
    the sums of every other campaign (conversions of campaigns without visits included),
    when there is any."""
    out = {name: (conversions.get(name, 0), visits[name]) for name in top(visits, max_series)}
    rest_v = sum(visits.values()) - sum(v for _, v in out.values())
    rest_c = sum(conversions.values()) - sum(c for c, _ in out.values())
    if rest_v or rest_c:
        out[OTHER] = (rest_c, rest_v)
    return out


def ratios(visits: Mapping[str, int], conversions: Mapping[str, int],
           max_series: int) -> dict[str, float]:
    """The `conversion_ratio` figure: label -> conversions / visits, by label; a label
    without visits (only `other` can have conversions and none) is left out."""
    return {label: c / v
            for label, (c, v) in sorted(capped(visits, conversions, max_series).items())
            if v > 0}
