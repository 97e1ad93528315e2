"""`forget`: erase users from the store (contract section 7, docs/privacy.md).

`forget` erases users: their numbers, customer records and segment records, their bits
in the per-day activity and signup bitmaps, and their contribution to the churn
difference arrays (lua/forget.lua, atomic per shard). With `STREAM_USER_ID_KEY` the ids
are hashed first, as the fold hashes them (stream/privacy.py).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .privacy import read_ids
from .store.wire import encode_forget

#: Users per forget.lua call: each call is atomic in its shard and blocks it while it
#: runs, so calls stay short (about 3 ms with 90 days of bitmaps).
FORGET_CHUNK = 50

if TYPE_CHECKING:
    from .settings import Settings
    from .store.store import Store
    from .timebuckets import Clock

def forget(store: Store, user_ids: Iterable[str], today: int,
           on_progress: Callable[[int], None] | None = None) -> int:
    """Erase the users from the store; returns how many of them it held anything about.

    Order matters:
    1. ids are hashed as the fold hashes them (with STREAM_USER_ID_KEY) and placed in
       their shard and bucket;
    2. per shard, one lua/forget.lua call per FORGET_CHUNK users erases them atomically
       and, when it erased anyone, makes every worker's cached bit numbers of the shard
       stale, so no worker sets a bit under a forgotten number afterwards (it re-reads
       its batch instead, see lua/apply.lua);
    3. the days-active scan is redone, so its figures no longer count them.
    `on_progress(n)` is called with the count of ids handled so far."""
    keys = store.keys
    hasher = store.user_ids
    # bitmaps of every day that can still exist (they expire bd + 2 days after their day)
    days = [today - keys.bitmap_days - 3, today + 2]
    erased = handled = 0
    chunk: dict[int, list[Any]] = {}

    def flush(shard: int) -> None:
        nonlocal erased
        users = chunk.pop(shard)
        body = encode_forget(keys.tag(shard), users, days, bool(store.segments))
        erased += int(store.scripts.call("forget", [keys.offsets(shard)], body))

    seen: set[str] = set()
    for uid in user_ids:
        handled += 1
        name = hasher(uid) if hasher is not None else uid
        if name not in seen:
            seen.add(name)
            shard, bucket = keys.user_shard_bucket(name)
            chunk.setdefault(shard, []).extend((bucket, name))
            if len(chunk[shard]) >= 2 * FORGET_CHUNK:
                flush(shard)
        if on_progress is not None and handled % 1000 == 0:
            on_progress(handled)
    for shard in list(chunk):
        flush(shard)
    if on_progress is not None:
        on_progress(handled)
    if erased:
        store.drop_cached_figures()
    if erased and store.client.exists(keys.scan):
        from .store.scan import scan_and_save

        scan_and_save(store, today)
    return erased



def forget_command(settings: Settings, user_ids: list[str], from_file: str | None,
                   no_progress: bool, clock: Clock | None = None) -> int:
    """`forget USER_ID ... [--from-file F]`: erase the users, print how many were erased.
    Today is the local day of `clock` (default: the system clock), the command's own.
    Exit code 0 when done, 1 when Redis failed (re-running is safe), 2 when it cannot
    start."""
    import redis
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from .app import open_store
    from .store.store import StoreMismatch
    from .timebuckets import SYSTEM_CLOCK, DayMapper

    if not user_ids and from_file is None:
        print("engagement-stream: forget needs USER_ID arguments or --from-file F",
              file=sys.stderr)
        return 2
    total: int | None = len(user_ids)
    handle = None
    if from_file is not None:
        try:
            handle = (sys.stdin if from_file == "-"
                      else open(from_file, encoding="utf-8"))  # noqa: SIM115
            if handle is not sys.stdin:
                total = (total or 0) + sum(1 for _ in read_ids(handle))
                handle.seek(0)
            else:
                total = None
        except (OSError, UnicodeDecodeError) as exc:
            print(f"engagement-stream: cannot read --from-file {from_file}: {exc}",
                  file=sys.stderr)
            return 2
    ids = itertools.chain((u for u in user_ids if u), read_ids(handle or ()))
    bar = Progress(TextColumn("forget"), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True),
                   disable=no_progress or (total is not None and total < 10_000))
    task = bar.add_task("forget", total=total)
    store = open_store(settings)
    try:
        store.check_meta(record=False)
        with bar:
            today = DayMapper(settings.timezone).today((clock or SYSTEM_CLOCK).now())
            erased = forget(store, ids, today,
                            lambda n: bar.update(task, completed=n))
    except StoreMismatch as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    except (redis.exceptions.RedisError, UnicodeDecodeError) as exc:
        print(f"engagement-stream: forget stopped, run it again: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
        if handle is not None and handle is not sys.stdin:
            handle.close()
    print(f"{erased} user{'s' if erased != 1 else ''} erased")
    return 0
