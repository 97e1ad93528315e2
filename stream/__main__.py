"""Command line: `python -m stream worker|demo|report|backfill|forget|generate` (also
`engagement-stream`).

Settings come from flags or STREAM_* variables (flags win); a bad one stops the program
with one line naming it and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NoReturn

from . import __version__
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
    "--event-format": ("event_format", str, "native, segment or a mapping file "
                                            "(STREAM_EVENT_FORMAT)"),
    "--topic-formats": ("topic_formats", str, "per-topic formats, topic=format,... "
                                              "(STREAM_TOPIC_FORMATS)"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    for flag, (dest, typ, help_text) in _COMMON_FLAGS.items():
        p.add_argument(flag, dest=dest, type=typ, default=None, help=help_text)
    p.add_argument("--redis-cluster", dest="redis_cluster", action="store_const", const=True,
                   default=None, help="Redis Cluster mode (STREAM_REDIS_CLUSTER=true)")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors in plain words (no usage dump, no "argument"/"choose
    from" jargon), exit code 2 like every other bad setting."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"engagement-stream: {_plain(message)} (see {self.prog} --help)\n")


#: argparse's phrasings -> plain ones; the first pattern that matches wins.
_ARGPARSE_WORDS: tuple[tuple[str, str], ...] = (
    (r"argument (--day): invalid fromisoformat value: (.*)", r"\1 \2 is not a date YYYY-MM-DD"),
    (r"argument (--from-time): invalid fromisoformat value: (.*)",
     r"\1 \2 is not a time such as 2026-11-01T00:00:00Z"),
    (r"argument (\S+): invalid (?:int|_offset) value: (.*)", r"\1 \2 is not a whole number"),
    (r"argument (\S+): invalid float value: (.*)", r"\1 \2 is not a number"),
    (r"argument (\S+): expected one argument", r"\1 needs a value"),
    (r"argument (\S+): not allowed with argument (\S+)", r"give \2 or \1, not both"),
    (r"one of the arguments (\S+) (\S+) is required", r"give \1 or \2"),
    (r"argument COMMAND: invalid choice: (\S+) \(choose from (.*)\)",
     r"unknown command \1: use one of \2"),
    (r"the following arguments are required: COMMAND",
     "give a command: worker, demo, report, backfill or generate"),
    (r"unrecognized arguments: (.*)", r"unknown option \1"),
    (r"argument (\S+): (.*)", r"\1: \2"),
)


def _plain(message: str) -> str:
    for pattern, replacement in _ARGPARSE_WORDS:
        plain, n = re.subn(f"^{pattern}$", replacement, message)
        if n:
            return plain
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="engagement-stream",
        description="Kafka product telemetry -> Redis -> Prometheus engagement metrics.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    d.add_argument("--rate", type=float, default=None,
                   help="play today at the speed that gives about this many live events "
                        "per second (default: --day-minutes)")
    d.add_argument("--day-minutes", type=float, default=10.0,
                   help="real minutes one simulated day lasts (default 10)")
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
    f = sub.add_parser("forget", help="erase users from the store (GDPR article 17); "
                       "prints how many it erased")
    _add_common(f)
    f.add_argument("user_ids", nargs="*", metavar="USER_ID", help="user ids to erase")
    f.add_argument("--from-file", metavar="F", default=None,
                   help="also the ids in file F, one per line ('-': standard input)")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    doc = sub.add_parser("doctor", help="check the configuration against the real Kafka and "
                         "Redis before a first deployment (exit code 0: all checks pass)")
    _add_common(doc)
    snd = sub.add_parser("send", help="produce test messages (a JSON object gets an event_id "
                         "and ts when it has none), e.g. one event to see in report")
    _add_common(snd)
    snd.add_argument("message", nargs="*", help="message values (default: one activity event)")
    snd.add_argument("--topic", default=None, help="topic (default: the first of STREAM_TOPICS)")
    g = sub.add_parser("generate", help="produce a realistic event stream to Kafka")
    _add_common(g)
    g.add_argument("--users", type=int, default=5000, help="simulated users (default 5000)")
    g.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    g.add_argument("--history-days", type=int, default=0,
                   help="days of back history produced first (default 0)")
    c = sub.add_parser("check-format", help="check a mapping file and show what a sample "
                       "of messages becomes (docs/formats.md)")
    _add_common(c)
    c.add_argument("format", nargs="?", default="segment",
                   help="native, segment or the path of a mapping file (default segment)")
    where = c.add_mutually_exclusive_group()
    where.add_argument("--sample", metavar="FILE", help="a JSONL file, one message a line")
    where.add_argument("--topic", metavar="T", help="read the latest messages of topic T "
                       "(no consumer group; nothing is committed)")
    c.add_argument("--latest", type=int, default=20, metavar="N",
                   help="with --topic: how many of the latest messages (default 20)")
    c.add_argument("--json", action="store_true", help="one JSON object per message")
    c.add_argument("--presets", action="store_true",
                   help="list the shipped presets and how to select each")
    return parser


def _offset(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0: give an offset of 0 or more")
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
    if args.command == "check-format":
        return _check_format(args)
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
        return _interruptible_backfill(settings, args)
    if args.command == "forget":
        return _forget(settings, args)
    if args.command == "demo":
        from .demo.localservers import BROKER_MISSING, broker_available
        from .demo.run import run_demo

        if not broker_available():  # a bare install is the worker's runtime alone
            print(f"engagement-stream: {BROKER_MISSING}", file=sys.stderr)
            return 2
        from .metrics.httpserver import BindError, check_bindable

        try:  # before the demo starts its servers (it picks a free port itself)
            check_bindable(settings.metrics_host)
        except BindError as exc:
            print(f"engagement-stream: {exc}", file=sys.stderr)
            return 2
        return run_demo(settings, users=args.users, rate=args.rate,
                        history_days=args.history_days, duration=args.duration,
                        view=not args.no_view, prometheus=not args.no_prometheus,
                        day_minutes=args.day_minutes)
    if args.command == "doctor":
        return _doctor(settings)
    if args.command == "send":
        from .send import send

        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return send(settings, args.message, args.topic)
    if args.command == "generate":
        from .demo.run import run_generate

        unreachable = _brokers_problem(settings)
        if unreachable is not None:
            print(f"engagement-stream: {unreachable}", file=sys.stderr)
            return 2
        return run_generate(settings, users=args.users, rate=args.rate,
                            history_days=args.history_days)
    return 2


def _brokers_problem(settings: Settings) -> str | None:
    """Why the Kafka brokers cannot be reached now (one line), or None. For the one-shot
    commands (`backfill`, `generate`), which stop with that line and exit code 2 rather
    than wait like the worker; aiokafka's own error lines about it are held back."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaConnectionError

    from .kafka.config import KafkaConfig

    async def check() -> str | None:
        producer = AIOKafkaProducer(**KafkaConfig.from_settings(settings).aiokafka())
        try:
            await producer.start()
        except KafkaConnectionError:
            return (f"cannot reach the Kafka brokers {settings.kafka_brokers}: check "
                    f"STREAM_KAFKA_BROKERS and that Kafka is up")
        finally:
            await producer.stop()
        return None

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(check())
    finally:
        quiet.setLevel(level)


def _redis_problem(settings: Settings) -> str | None:
    """Why Redis cannot be reached now (one line), or None; for `backfill`, which stops
    with that line and exit code 2 at start rather than wait like the worker."""
    import redis

    from .app import open_store

    store = open_store(settings, socket_timeout=5, socket_connect_timeout=5)
    try:
        store.client.ping()
    except redis.exceptions.RedisError as exc:
        return f"cannot reach Redis ({exc}): check STREAM_REDIS_URL and that Redis is up"
    finally:
        store.close()
    return None


def _check_format(args: argparse.Namespace) -> int:
    """check-format needs no valid settings but the Kafka ones with --topic (a mapping
    file that the worker would refuse is exactly what it is for)."""
    from .formats.check import run
    from .kafka.config import KafkaConfig

    def kafka_options() -> dict[str, Any]:
        return KafkaConfig.from_settings(
            _settings(args, event_format="native", topic_formats="")).aiokafka()

    try:
        return run(args.format, args.sample, args.topic, args.latest, args.json,
                   args.presets, args.max_lateness_days or 400, kafka_options, sys.stdout)
    except SettingsError as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2


def _doctor(settings: Settings) -> int:
    from .app import open_store
    from .doctor import doctor

    # Connection errors are the doctor's own findings, printed once as a check line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    store = open_store(settings, socket_timeout=5, socket_connect_timeout=5)
    try:
        return doctor(settings, store)
    finally:
        store.close()


def _store_mismatch(settings: Settings) -> str | None:
    """Why the store in Redis refuses these settings (another STREAM_TIMEZONE...), checked
    read-only before anything starts; None when it accepts them or cannot be read now (the
    worker waits Redis out and checks again)."""
    import redis

    from .app import open_store
    from .store.store import StoreMismatch

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


def _kafka_tls_problem(settings: Settings) -> str | None:
    """Why TLS to the Kafka brokers fails (a wrong CA...), checked before anything starts."""
    from .kafka.tls import tls_problem

    return tls_problem(settings)


def _worker(settings: Settings) -> int:
    from .app import Stalled, limit_malloc_arenas, run_worker
    from .metrics.httpserver import BindError
    from .store.store import StoreMismatch

    limit_malloc_arenas()
    mismatch = _store_mismatch(settings) or _kafka_tls_problem(settings)
    if mismatch is not None:
        print(f"engagement-stream: {mismatch}", file=sys.stderr)
        return 2
    async def run() -> None:
        source = None
        if settings.engine == "faust":
            # built in the loop the worker runs in, as faust's App wants
            from .engines.faust import standalone_source

            source = standalone_source(settings)
        await run_worker(settings, source=source)

    try:
        asyncio.run(run())
    except (StoreMismatch, BindError) as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    except Stalled as exc:
        logging.getLogger("stream").error("%s", exc)
        return 3
    return 0


def _interruptible_backfill(settings: Settings, args: argparse.Namespace) -> int:
    """`_backfill` with its documented exit code 130 for an interruption at any moment,
    also before its own handlers are in place (start checks, a hanging broker): SIGTERM
    counts as Ctrl-C from here on."""
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _backfill(settings, args)
    except KeyboardInterrupt:
        print("backfill interrupted (a re-run continues where it stopped)", file=sys.stderr)
        return 130


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    import signal
    import time
    from zoneinfo import ZoneInfo

    from aiokafka.errors import KafkaConnectionError
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
    from .store.store import StoreMismatch
    from .timebuckets import SYSTEM_CLOCK, DayMapper

    topics = [t.strip() for arg in (args.topic or [settings.topics]) for t in arg.split(",")
              if t.strip()]
    from_time = args.from_time
    if from_time is not None and from_time.tzinfo is None:
        from_time = from_time.replace(tzinfo=ZoneInfo(settings.timezone))
    problem = (_topics_problem(topics, settings) or _redis_problem(settings)
               or _store_mismatch(settings) or _kafka_tls_problem(settings)
               or _brokers_problem(settings))
    if problem is not None:
        print(f"engagement-stream: {problem}", file=sys.stderr)
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
                                  from_time=from_time, on_progress=on_progress, stop=stop,
                                  days=DayMapper(settings.timezone), clock=SYSTEM_CLOCK)

    store = open_store(settings)
    started = time.monotonic()
    try:
        with bar:
            result = asyncio.run(main())
    except (BackfillError, StoreMismatch) as exc:
        print(f"engagement-stream: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError:  # the brokers went away between the check and the start
        print(f"engagement-stream: cannot reach the Kafka brokers {settings.kafka_brokers}: "
              f"check STREAM_KAFKA_BROKERS and that Kafka is up", file=sys.stderr)
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


def _forget(settings: Settings, args: argparse.Namespace) -> int:
    from .forget import forget_command

    return forget_command(settings, args.user_ids, args.from_file, args.no_progress)


def _topics_problem(topics: list[str], settings: Settings) -> str | None:
    """Why `backfill --topic` cannot be replayed (one line), or None."""
    from .settings import topic_name_problem

    if not topics:
        return "--topic is empty: give a topic name (or leave --topic out for STREAM_TOPICS)"
    for topic in topics:
        bad = topic_name_problem(topic)
        if bad is not None:
            return f"--topic: {bad}"
        if topic == settings.dlq_topic:
            return (f"--topic {topic!r} is the dead-letter topic (STREAM_DLQ_TOPIC): replaying "
                    f"it would dead-letter its messages again; give an input topic")
    return None


def _report(settings: Settings, as_json: bool, day: date | None) -> int:
    import redis

    from .app import open_store, read_figures
    from .figures import WINDOW_DAYS, as_of_day
    from .store.store import StoreMismatch
    from .timebuckets import SYSTEM_CLOCK, DayMapper, day_label, day_number

    days, clock = DayMapper(settings.timezone), SYSTEM_CLOCK  # the command's, built once
    if day is not None:
        # A past day's figures need its per-day keys back to 30 days before it.
        today = days.today(clock.now())
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
        figs = read_figures(store, days, None if day is None else day_number(day), clock)
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
