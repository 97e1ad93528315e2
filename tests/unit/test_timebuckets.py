"""Local days from event times, including daylight-saving days."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from stream.timebuckets import (
    SYSTEM_CLOCK,
    DayMapper,
    FixedClock,
    day_date,
    day_number,
    month_so_far,
    rolling,
)


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp() * 1000)


def test_day_numbers() -> None:
    assert day_number(date(1970, 1, 2)) == 1
    assert day_date(day_number(date(2026, 11, 22))) == date(2026, 11, 22)


def test_utc_days() -> None:
    m = DayMapper("UTC")
    assert m.day_of_ms(ms(2026, 11, 22, 23, 59)) == day_number(date(2026, 11, 22))
    assert m.day_of_ms(ms(2026, 11, 23, 0, 0)) == day_number(date(2026, 11, 23))


def test_zone_days_and_dst() -> None:
    berlin = DayMapper("Europe/Berlin")
    # 2026-03-29: Berlin moves from +01:00 to +02:00 at 01:00 UTC; the local day has 23 h.
    assert berlin.day_of_ms(ms(2026, 3, 28, 22, 59)) == day_number(date(2026, 3, 28))
    assert berlin.day_of_ms(ms(2026, 3, 28, 23, 0)) == day_number(date(2026, 3, 29))
    assert berlin.day_of_ms(ms(2026, 3, 29, 21, 59)) == day_number(date(2026, 3, 29))
    assert berlin.day_of_ms(ms(2026, 3, 29, 22, 0)) == day_number(date(2026, 3, 30))
    ny = DayMapper("America/New_York")
    # 2026-11-01: New York falls back from -04:00 to -05:00; the local day has 25 h.
    assert ny.day_of_ms(ms(2026, 11, 1, 4, 0)) == day_number(date(2026, 11, 1))
    assert ny.day_of_ms(ms(2026, 11, 2, 4, 59)) == day_number(date(2026, 11, 1))
    assert ny.day_of_ms(ms(2026, 11, 2, 5, 0)) == day_number(date(2026, 11, 2))
    kolkata = DayMapper("Asia/Kolkata")  # +05:30, a half-hour zone
    assert kolkata.day_of_ms(ms(2026, 11, 21, 18, 29)) == day_number(date(2026, 11, 21))
    assert kolkata.day_of_ms(ms(2026, 11, 21, 18, 30)) == day_number(date(2026, 11, 22))


def test_windows() -> None:
    today = day_number(date(2026, 11, 22))
    assert list(rolling(today, 7)) == list(range(today - 6, today + 1))
    assert len(month_so_far(today)) == 22
    assert day_date(month_so_far(today)[0]) == date(2026, 11, 1)


def test_a_fixed_clock_reads_its_instant_and_the_system_clock_moves() -> None:
    at = datetime(2020, 2, 29, 23, 30, tzinfo=UTC)
    clock = FixedClock(at)
    assert clock.now() == at
    assert clock.now_ms() == 1_583_019_000_000  # worked out by hand: 2020-02-29T23:30Z
    assert clock.seconds() == 1_583_019_000.0
    # the clock's day is local: 23:30 UTC is already March 1 in Berlin (UTC+1)
    assert DayMapper("Europe/Berlin").today(clock.now()) == day_number(date(2020, 3, 1))
    before = datetime.now(UTC)
    assert before <= SYSTEM_CLOCK.now() <= datetime.now(UTC)
    assert abs(SYSTEM_CLOCK.now_ms() / 1000 - time.time()) < 5
