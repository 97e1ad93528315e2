"""Zone names that are one zone: links of the tz database (checked against the links
themselves, as the installed tz database resolves them), not string spellings."""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path

import pytest

from stream.zones import same_zone

SYSTEM = Path("/usr/share/zoneinfo")


@pytest.mark.parametrize(("a", "b"), [
    ("UTC", "Etc/UTC"), ("UTC", "Etc/Universal"), ("UTC", "Etc/Zulu"), ("UTC", "Zulu"),
    ("Etc/UTC", "UCT"), ("Asia/Calcutta", "Asia/Kolkata"),
    ("US/Eastern", "America/New_York"), ("Europe/Kiev", "Europe/Kyiv"),
])
def test_links_are_one_zone(a: str, b: str) -> None:
    assert same_zone(a, b) and same_zone(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("UTC", "Etc/GMT"),  # the same offset, another zone of the database (GMT, not UTC)
    ("UTC", "Etc/GMT+1"), ("Europe/Berlin", "Europe/Paris"), ("Europe/Berlin", "UTC"),
    ("America/New_York", "America/Toronto"), ("UTC", "utc"), ("UTC", "../UTC"),
    ("UTC", "No/Such_Zone"), ("UTC", ""),
])
def test_other_zones_are_not(a: str, b: str) -> None:
    assert not same_zone(a, b) and not same_zone(b, a)


@pytest.mark.skipif(not (SYSTEM / "Etc" / "UTC").is_file(), reason="no system tz database")
def test_agrees_with_the_links_of_the_system_database() -> None:
    """Every installed name is the same zone as UTC exactly when it is a link to the same
    file as UTC (symbolic or hard), the tz database's own notion of an alias."""
    def target(name: str) -> tuple[int, int]:
        st = os.stat(SYSTEM / name)  # follows symbolic links
        return st.st_dev, st.st_ino

    utc = target("Etc/UTC")
    names = sorted(n for n in zoneinfo.available_timezones() if (SYSTEM / n).is_file())
    assert len(names) > 300
    aliases = {n for n in names if target(n) == utc}
    assert {"UTC", "Etc/UTC", "Zulu"} <= aliases
    for name in names:
        assert same_zone("UTC", name) == (name in aliases), name
