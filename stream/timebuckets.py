"""Event time -> calendar day in the configured zone, the day windows the figures use,
and the processor clock.

Days are integers: the number of days from 1970-01-01 to the local calendar date (so
`day_number(date(1970, 1, 2)) == 1`). Integers keep Redis keys short and let the Lua
scripts do day arithmetic. Pure: no I/O.

A command builds one `Clock` and one `DayMapper` at start and passes them to whatever
needs today or now (the worker, the scan and sweep loops, `report`, `forget`,
`backfill`), so they all agree and a test can fix the time. Timers for timeouts and
intervals use `time.monotonic` instead: they measure durations, not the date.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_DAY_MS: Final = 86_400_000
# Every zone offset change since 1970 happens on a quarter hour, so one lookup per
# 15-minute slot is exact and turns the per-event zone conversion into a dict hit.
_SLOT_MS: Final = 15 * 60 * 1000


def day_number(d: date) -> int:
    """Days from 1970-01-01 to `d`."""
    return d.toordinal() - _EPOCH_ORDINAL


def day_date(day: int) -> date:
    """The calendar date of day number `day`."""
    return date.fromordinal(day + _EPOCH_ORDINAL)


class DayMapper:
    """Maps epoch milliseconds to local day numbers in one IANA zone.

    Cached per 15-minute slot (bounded: the cache is cleared when it passes
    `max_cache` entries, default 200k slots, about 5.7 years of event time)."""

    __slots__ = ("_cache", "_max_cache", "_utc", "zone")

    def __init__(self, zone: str, max_cache: int = 200_000) -> None:
        self.zone = ZoneInfo(zone)
        self._utc = zone in ("UTC", "Etc/UTC", "Etc/GMT", "GMT", "Etc/Universal", "Universal")
        self._cache: dict[int, int] = {}
        self._max_cache = max_cache

    @property
    def utc(self) -> bool:
        """True when local days are UTC days (no cache needed)."""
        return self._utc

    @property
    def slot_cache(self) -> dict[int, int]:
        """The cache behind `day_of_ms`: 15-minute slot (epoch ms // 900000) -> local
        day. Read by the compiled fold, which calls `day_of_ms` on a miss."""
        return self._cache

    def day_of_ms(self, ts_ms: int) -> int:
        """Local day number of the instant `ts_ms` (epoch milliseconds)."""
        if self._utc:
            return ts_ms // _DAY_MS
        slot = ts_ms // _SLOT_MS
        day = self._cache.get(slot)
        if day is None:
            if len(self._cache) >= self._max_cache:
                self._cache.clear()
            local = datetime.fromtimestamp(slot * _SLOT_MS / 1000, tz=UTC).astimezone(self.zone)
            day = day_number(local.date())
            self._cache[slot] = day
        return day

    def today(self, now: datetime) -> int:
        """Local day number of the processor clock `now` (an aware datetime)."""
        return day_number(now.astimezone(self.zone).date())

    def day_start(self, day: int) -> datetime:
        """00:00 local time of `day`, as an aware datetime (handles DST-shifted midnights)."""
        d = day_date(day)
        naive = datetime(d.year, d.month, d.day)
        return naive.replace(tzinfo=self.zone)


def rolling(today: int, days: int) -> range:
    """The `days` calendar days ending with `today`, today included."""
    return range(today - days + 1, today + 1)


def month_so_far(today: int) -> range:
    """The days of `today`'s calendar month up to and including today."""
    first = day_date(today).replace(day=1)
    return range(day_number(first), today + 1)


def day_label(day: int) -> str:
    """ISO date string of a day number, for humans and logs."""
    return day_date(day).isoformat()


def utc_now() -> datetime:
    """The system clock now, as an aware UTC datetime (what `SYSTEM_CLOCK.now` reads)."""
    return datetime.now(UTC)


class Clock:
    """The processor clock: the system's wall time. One object, built at start and passed
    in, so the figures, the lateness check and the day a batch folds into all read the
    same time. `FixedClock` stands still, for tests."""

    __slots__ = ()

    def now(self) -> datetime:
        """Now, as an aware UTC datetime."""
        return utc_now()

    def now_ms(self) -> int:
        """Now, in epoch milliseconds."""
        return ms(self.now())

    def seconds(self) -> float:
        """Now, in epoch seconds (as `time.time()`)."""
        return self.now().timestamp()


class FixedClock(Clock):
    """A clock that always reads `at` (an aware datetime)."""

    __slots__ = ("at",)

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


#: The system clock, the default of everything that takes a clock.
SYSTEM_CLOCK: Final = Clock()


def ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
