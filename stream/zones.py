"""Whether two IANA zone names are one zone.

A zone has many names: `UTC`, `Etc/UTC`, `Etc/Zulu` and `Universal` are links to one
entry of the tz database, as are `Asia/Calcutta` and `Asia/Kolkata`. Names are links
when they lead to the same compiled tzdata file, so two names are one zone when the
files `zoneinfo` would read for them hold the same bytes: exactly the same rules, hence
the same calendar days. Comparing the files rather than keeping a list of aliases follows
the tz database installed, whatever its version.
"""

from __future__ import annotations

import importlib.resources
import zoneinfo
from pathlib import Path


def zone_file(name: str) -> bytes | None:
    """The compiled tzdata of `name`, found as `zoneinfo.ZoneInfo(name)` finds it (the
    first directory of `zoneinfo.TZPATH` holding it, else the `tzdata` package), or None
    when there is none or the name is not a plain zone key."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    for base in zoneinfo.TZPATH:
        path = Path(base, *parts)
        if path.is_file():
            try:
                return path.read_bytes()
            except OSError:
                return None
    try:
        return importlib.resources.files("tzdata.zoneinfo").joinpath(*parts).read_bytes()
    except (ModuleNotFoundError, OSError):
        return None


def same_zone(a: str, b: str) -> bool:
    """True when the IANA names `a` and `b` name one zone (equal names, or names whose
    tzdata is the same file, i.e. links of each other)."""
    if a == b:
        return True
    data = zone_file(a)
    return data is not None and data == zone_file(b)
