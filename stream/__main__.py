"""Command line: `python -m stream worker|demo|report|backfill|generate` (also
`engagement-stream`).

Settings come from flags or STREAM_* variables (flags win); a bad one stops the program
with one line naming it and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from .settings import Settings, SettingsError, load

#: flag -> settings field, for the flags every command accepts.
_COMMON_FLAGS: dict[str, tuple[str, type, str]] = {
    "--brokers": ("kafka_brokers", str, "Kafka bootstrap servers (STREAM_KAFKA_BROKERS)"),
    "--redis-url": ("redis_url", str, "redis:// or rediss:// URL (STREAM_REDIS_URL)"),
    "--topics": ("topics", str, "comma-separated topics (STREAM_TOPICS)"),
    "--dlq-topic": ("dlq_topic", str, "dead-letter topic (STREAM_DLQ_TOPIC)"),
    "--metrics-host": ("metrics_host", str, "bind address of /metrics (STREAM_METRICS_HOST)"),
    "--metrics-port": ("metrics_port", int, "port of /metrics (STREAM_METRICS_PORT)"),
    "--timezone": ("timezone", str, "IANA zone of calendar days (STREAM_TIMEZONE)"),
    "--max-lateness-days": ("max_lateness_days", int,
                            "oldest accepted event, days (STREAM_MAX_LATENESS_DAYS)"),
    "--consumer-group": ("consumer_group", str, "consumer group (STREAM_CONSUMER_GROUP)"),
    "--redis-shards": ("redis_shards", int, "shards of per-user state (STREAM_REDIS_SHARDS)"),
    "--key-prefix": ("key_prefix", str, "Redis key prefix (STREAM_KEY_PREFIX)"),
    "--log-level": ("log_level", str, "DEBUG, INFO, WARNING or ERROR (STREAM_LOG_LEVEL)"),
    "--segments": ("segments", str, "props keys to split figures by, e.g. plan,country "
                                    "(STREAM_SEGMENTS)"),
    "--segment-max-values": ("segment_max_values", int,
                             "values per segment dimension (STREAM_SEGMENT_MAX_VALUES)"),
    "--engine": ("engine", str, "native (the batch worker) or faust (a faust-streaming "
                               "application) (STREAM_ENGINE)"),
    "--campaign-max-series": ("campaign_max_series", int,
                              "campaigns with a conversion-ratio series of their own "
                              "(STREAM_CAMPAIGN_MAX_SERIES)"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    for flag, (dest, typ, help_text) in _COMMON_FLAGS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_text)
    p.add_argument("--redis-cluster", dest="redis_cluster", action="store_const", const=True,
                   default=None, help="Redis Cluster mode (STREAM_REDIS_CLUSTER=true)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engagement-stream",
        description="Kafka product telemetry -> Redis -> Prometheus engagement metrics.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    w = sub.add_parser("worker", help="consume the topics, fold into Redis, serve /metrics")
    _add_common(w)
    r = sub.add_parser("report", help="print the current figures from Redis")
    _add_common(r)
    r.add_argument("--json", action="store_true", help="one JSON object (metric names "
                   "without the engagement_ prefix)")
    r.add_argument("--day", type=date.fromisoformat, default=None,
                   help="figures as of the end of this past local day (YYYY-MM-DD) "
                        "instead of now; all-time totals are left out")
    d = sub.add_parser("demo", help="local broker + Redis + generator + worker + live view")
    _add_common(d)
    d.add_argument("--users", type=int, default=5000, help="simulated users (default 5000)")
    d.add_argument("--rate", type=float, default=200.0,
                   help="live events per second (default 200)")
    d.add_argument("--history-days", type=int, default=40,
                   help="days of back history loaded first (default 40)")
    d.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: until Ctrl-C)")
    d.add_argument("--no-view", action="store_true", help="no live terminal view")
    d.add_argument("--no-prometheus", action="store_true",
                   help="do not start Prometheus even when it is installed")
    b = sub.add_parser("backfill", help="replay topic history into Redis (idempotent; the "
                       "live consumer group is not touched)")
    _add_common(b)
    b.add_argument("--topic", action="append", default=None, metavar="T",
                   help="topic to replay (repeat or comma-separate; default: STREAM_TOPICS)")
    start = b.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-time", type=datetime.fromisoformat, metavar="ISO",
                       help="from the first message with a Kafka timestamp at or after "
                            "this time (ISO 8601; without an offset: in STREAM_TIMEZONE)")
    start.add_argument("--from-offset", type=_offset, metavar="N",
                       help="from offset N of every partition")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = sub.add_parser("generate", help="produce a realistic event stream to Kafka")
    _add_common(g)
    g.add_argument("--users", type=int, default=5000, help="simulated users (default 5000)")
    g.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    g.add_argument("--history-days", type=int, default=0,
                   help="days of back history produced first (default 0)")
    return parser


def _offset(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return n


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    fields = {dest for dest, _, _ in _COMMON_FLAGS.values()} | {"redis_cluster"}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    overrides.update(extra)
    return load(overrides)


def _logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(
        settings.log_level)))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo.run import demo_settings

            settings = demo_settings(_settings(args))
        else:
            settings = _settings(args)
    except SettingsError as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    _logging(settings)
    if args.command == "worker":
        return _worker(settings)
    if args.command == "report":
        return _report(settings, args.json, args.day)
    if args.command == "backfill":
        return _backfill(settings, args)
    if args.command == "demo":
        from .demo.run import run_demo

        return run_demo(settings, users=args.users, rate=args.rate,
                        history_days=args.history_days, duration=args.duration,
                        view=not args.no_view, prometheus=not args.no_prometheus)
    if args.command == "generate":
        from .demo.run import run_generate

        return run_generate(settings, users=args.users, rate=args.rate,
                            history_days=args.history_days)
    return 2


def _store_mismatch(settings: Settings) -> str | None:
    """Why the store in Redis refuses these settings (another STREAM_TIMEZONE...), checked
    read-only before anything starts; None when it accepts them or cannot be read now (the
    worker waits Redis out and checks again)."""
    import redis

    from .app import open_store
    from .store import StoreMismatch

    store = open_store(settings)
    try:
        store.check_meta(record=False)
    except StoreMismatch as exc:
        return str(exc)
    except redis.exceptions.RedisError:
        return None
    finally:
        store.close()
    return None


def _worker(settings: Settings) -> int:
    from .app import Stalled, limit_malloc_arenas, run_worker
    from .store import StoreMismatch

    limit_malloc_arenas()
    mismatch = _store_mismatch(settings)
    if mismatch is not None:
        print(f"engagement-stream: {mismatch}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_worker(settings))
    except StoreMismatch as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    except Stalled as exc:
        logging.getLogger("stream").error("%s", exc)
        return 3
    return 0


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import time
    from zoneinfo import ZoneInfo

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .app import open_store
    from .backfill import BackfillError, run_backfill
    from .backfill import Progress as Done
    from .store import StoreMismatch

    topics = [t.strip() for arg in (args.topic or [settings.topics]) for t in arg.split(",")
              if t.strip()]
    from_time = args.from_time
    if from_time is not None and from_time.tzinfo is None:
        from_time = from_time.replace(tzinfo=ZoneInfo(settings.timezone))
    mismatch = _store_mismatch(settings)
    if mismatch is not None:
        print(f"engagement-stream: {mismatch}", file=sys.stderr)
        return 2
    bar = Progress(TextColumn("backfill"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=Console(stderr=True),
                   disable=args.no_progress)
    task = bar.add_task("backfill", total=None)

    def on_progress(p: Done) -> None:
        bar.update(task, total=p.total, completed=p.done)

    async def main() -> Done:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await run_backfill(settings, store, topics, from_offset=args.from_offset,
                                  from_time=from_time, on_progress=on_progress, stop=stop)

    store = open_store(settings)
    started = time.monotonic()
    try:
        with bar:
            result = asyncio.run(main())
    except (BackfillError, StoreMismatch) as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    skipped = (f", {result.skipped_by_time:,} older than --from-time skipped"
               if result.skipped_by_time else "")
    print(f"backfill {'done' if result.finished else 'interrupted'}: {result.done:,} of "
          f"{result.total or 0:,} messages of {result.partitions} partitions of "
          f"{', '.join(topics)} read in {time.monotonic() - started:.1f}s{skipped}",
          file=sys.stderr)
    return 0 if result.finished else 130


def _report(settings: Settings, as_json: bool, day: date | None) -> int:
    import redis

    from .app import open_store, read_figures
    from .figures import WINDOW_DAYS, as_of_day
    from .store import StoreMismatch
    from .timebuckets import DayMapper, day_label, day_number, utc_now

    if day is not None:
        # A past day's figures need its per-day keys back to 30 days before it.
        today = DayMapper(settings.timezone).today(utc_now())
        oldest = today - settings.retention_days + WINDOW_DAYS + 1
        if day_number(day) > today:
            print(f"engagement-stream: --day {day.isoformat()} is after today "
                  f"({day_label(today)} in {settings.timezone})", file=sys.stderr)
            return 2
        if day_number(day) < oldest:
            print(f"engagement-stream: --day {day.isoformat()} is no longer kept: per-day "
                  f"data lives STREAM_RETENTION_DAYS={settings.retention_days} days, so the "
                  f"oldest day with complete figures is {day_label(oldest)}", file=sys.stderr)
            return 2
    store = open_store(settings)
    try:
        store.check_meta(record=False)
        figs = read_figures(store, settings, None if day is None else day_number(day))
    except StoreMismatch as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    except redis.exceptions.RedisError as exc:
        print(f"engagement-stream: cannot read Redis: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if day is not None:
        figs = as_of_day(figs)
    if as_json:
        print(json.dumps(figs, sort_keys=False))
        return 0
    from rich.console import Console

    from .view import figures_table

    Console().print(figures_table(figs, title="engagement figures"
                                  + (f" as of {day.isoformat()}" if day else "")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
