"""The `demo` and `generate` commands.

`demo` starts everything on free loopback ports: a Tansu broker (Kafka protocol, in
memory), a private redis-server, Prometheus when it is installed (with the shipped rules),
then loads 40 days of back history, runs the worker in this process, plays the rest of
today as a compressed day (`--day-minutes` real minutes a day), and shows the figures
live in the terminal. Ctrl-C (or `--duration`) stops every process it started.

History and live stream are one draw of one model (`EventModel.plan_day`): the users
active today are those whose habits make them active today, arriving over the day, so
today's figures stay in the range of the previous days.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..app import Runtime, open_store, read_figures, run_worker
from ..settings import Settings
from ..view import Links, LiveView, Pipeline
from .generator import TOPICS, CompressedDay, DayPlan, Event, EventModel, bad_message, to_epoch_ms
from .localservers import PrometheusServer, RedisServer, TansuBroker, free_port
from .producer import make_producer, produce_events, topic_router

log = logging.getLogger("stream.demo")

#: The shipped Prometheus rules, as package data (deploy/prometheus/generate.py writes
#: this copy beside deploy/prometheus/rules/), so an installed package finds them too.
RULES_DIR = Path(__file__).resolve().parent / "rules"


def demo_settings(settings: Settings) -> Settings:
    """The demo's adjustments: fast group joins on the local broker (it waits about half
    the session timeout on a join), and log only warnings under the live view."""
    return settings.model_copy(update={"session_timeout_ms": 6000,
                                       "heartbeat_interval_ms": 1000,
                                       "log_level": "WARNING"})


def _port_or_free(port: int) -> int:
    """`port` when it can be bound on all interfaces, else a free one (a second demo, or
    a worker already on 9464, must not stop the demo from starting)."""
    import socket

    if port == 0:
        return free_port()
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return port
        except OSError:
            return free_port()


#: Real minutes one simulated day of the demo lasts, by default.
DAY_MINUTES = 10.0
#: One live message in this many is a bad one, to show the dead-letter path.
BAD_EVERY = 200


def run_demo(settings: Settings, users: int, rate: float | None, history_days: int,
             duration: float | None, view: bool, prometheus: bool,
             day_minutes: float = DAY_MINUTES) -> int:
    """Run the embedded demo until Ctrl-C or `duration` seconds; returns the exit code.

    The live stream plays today at `day_minutes` real minutes a day, or, with `rate`, at
    the speed that gives about `rate` events per second."""
    console = Console()
    if day_minutes <= 0 or (rate is not None and rate <= 0):
        flag = "--day-minutes" if day_minutes <= 0 else "--rate"
        console.print(f"engagement-stream: {flag} must be more than 0", style="red")
        return 2
    started: list[Any] = []
    try:
        with console.status("starting a local Kafka-protocol broker and Redis..."):
            broker = TansuBroker()
            started.append(broker)
            broker.start()
            redis_server = RedisServer()
            started.append(redis_server)
            redis_server.start()
            broker.create_topics([*settings.topic_list, settings.dlq_topic], partitions=4)
        port = _port_or_free(settings.metrics_port)
        settings = settings.model_copy(update={
            "kafka_brokers": broker.bootstrap,
            "redis_url": type(settings.redis_url)(redis_server.url),
            "metrics_port": port,
        })
        prom = _start_prometheus(console, port) if prometheus else None
        if prom is not None:
            started.append(prom)
        console.print(f"broker   {broker.bootstrap}\nredis    {redis_server.url}\n"
                      f"metrics  http://127.0.0.1:{port}/metrics")
        links = Links(f"http://127.0.0.1:{port}/metrics")
        if prom is not None:
            links = Links(links.metrics, prom.url, _ui_page(prom.url, "graph"),
                          _ui_page(prom.url, "alerts"))
            console.print(f"prometheus {prom.url}\n"
                          f"  graphs   {links.graph_page}\n"
                          f"  alerts   {links.alerts_page}", soft_wrap=True)
        asyncio.run(_demo(settings, console, users, rate, history_days, duration, view,
                          links, day_minutes))
    except KeyboardInterrupt:
        pass
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):
                server.stop()
        console.print("demo stopped; every process it started is gone")
    return 0


def _start_prometheus(console: Console, port: int) -> PrometheusServer | None:
    if shutil.which("prometheus") is None:
        console.print("[dim]prometheus not installed: skipping graphs and alerts[/dim]")
        return None
    rules = sorted(RULES_DIR.glob("*.yml"))
    prom = PrometheusServer(scrape_targets=[f"127.0.0.1:{port}"], rule_files=rules,
                            scrape_interval=5)
    try:
        prom.start()
    except Exception as exc:  # the demo works without it
        console.print(f"[yellow]prometheus did not start: {exc}[/yellow]")
        return None
    return prom


@contextlib.asynccontextmanager
async def _producing(settings: Settings, users: int) -> AsyncIterator[
        tuple[asyncio.Event, EventModel, AIOKafkaProducer]]:
    """A started producer, the user model, and a stop event set by SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    producer = make_producer(settings.kafka_brokers)
    await producer.start()
    try:
        yield stop, EventModel(users=users), producer
    finally:
        await producer.stop()


def _ui_page(base: str, page: str) -> str:
    """The address of a page of Prometheus' web UI: `/graph`, `/alerts` ... upstream, but
    `/classic/...` in distribution builds that ship only the classic UI (Debian's)."""
    import urllib.error
    import urllib.request

    for path in (f"/{page}", f"/classic/{page}"):
        try:
            with urllib.request.urlopen(base + path, timeout=5) as resp:
                if resp.status == 200:
                    return base + path
        except (urllib.error.URLError, OSError):
            continue
    return f"{base}/{page}"


async def _demo(settings: Settings, console: Console, users: int, rate: float | None,
                history_days: int, duration: float | None, view: bool, links: Links,
                day_minutes: float) -> None:
    loop = asyncio.get_running_loop()
    async with _producing(settings, users) as (stop, model, producer):
        day = _Day.begin(model, ZoneInfo(settings.timezone), history_days, rate, day_minutes)
        await _load_events(console, producer, day.plan.history, history_days,
                           settings.topic_list)
        started: asyncio.Future[Runtime] = loop.create_future()
        worker = asyncio.create_task(run_worker(settings, started, stop, install_signals=False))
        day.start(loop.time())
        live = asyncio.create_task(_play(producer, model, day, stop, settings.topic_list))
        # The worker may fail before it is started (a port taken meanwhile, say): wait for
        # either, so the demo stops with the worker's error instead of waiting for ever.
        pending: set[asyncio.Future[Any]] = {started, worker}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            stop.set()
            await asyncio.gather(live, return_exceptions=True)
            worker.result()  # raises the worker's error
            raise RuntimeError("the worker stopped before it started")
        runtime = started.result()
        if duration is not None:
            loop.call_later(duration, stop.set)
        if view:
            await _live_view(console, runtime, stop, links, day)
        else:
            await stop.wait()
        await asyncio.gather(worker, live)


def _day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """00:00 of `moment`'s day in `zone` and of the next day (DST-aware)."""
    local = moment.astimezone(zone).date()
    start = datetime.combine(local, datetime.min.time(), zone)
    end = datetime.combine(local + timedelta(days=1), datetime.min.time(), zone)
    return start, end


@dataclass
class _Day:
    """The day being played: its plan, the player, and when the play started."""

    zone: ZoneInfo
    plan: DayPlan
    player: CompressedDay
    day_minutes: float
    anchor: datetime
    started: float = 0.0

    @classmethod
    def begin(cls, model: EventModel, zone: ZoneInfo, history_days: int,
              rate: float | None, day_minutes: float) -> _Day:
        now = datetime.now(UTC)
        start, end = _day_bounds(now, zone)
        plan = model.plan_day(now, start, end, days=max(0, history_days))
        if rate is not None:  # the speed that plays the day's events at about `rate`/s
            day_minutes = max(1, len(plan.sessions)) / rate / 60
        speed = 1440.0 / day_minutes
        return cls(zone, plan, CompressedDay(plan, speed, model.seed), day_minutes, end)

    def start(self, at: float) -> None:
        self.started = at

    def next_day(self, model: EventModel, now: datetime, at: float) -> None:
        """The processor's day changed: play the new one from its start (the population
        keeps its first day's anchor, so it does not move)."""
        start, end = _day_bounds(now, self.zone)
        self.plan = model.plan_day(now, start, end, days=0, baseline=False,
                                   anchor=self.anchor)
        self.player = CompressedDay(self.plan, self.player.speed, model.seed)
        self.started = at

    def status(self, at: float) -> str:
        """What the view says about the clock: a compressed day, and where it is."""
        pace = f"compressed day, {self.day_minutes:.3g} min a day"
        if self.player.played(at - self.started):
            return f"{pace} · day played: replaying its sessions"
        sim = datetime.fromtimestamp(self.player.sim_ms(at - self.started) / 1000, self.zone)
        return f"{pace} · simulated {sim:%H:%M} {self.zone.key} · Ctrl-C stops"


async def _play(producer: AIOKafkaProducer, model: EventModel, day: _Day,
                stop: asyncio.Event, topics: Sequence[str] = TOPICS,
                tick: float = 0.05) -> int:
    """Produce the day's events as its simulated clock reaches them, stamped with the
    wall clock, to `topics` (see producer.topic_router), one in BAD_EVERY followed by a
    bad message; returns the messages sent."""
    loop = asyncio.get_running_loop()
    topic_of = topic_router(topics)
    spread = list(dict.fromkeys(topics))
    encode = msgspec.json.Encoder().encode
    rng = random.Random(f"{model.seed}:bad")
    sent = 0
    pending: list[asyncio.Future[Any]] = []

    async def send(event: Event) -> None:
        nonlocal sent
        sent += 1
        if sent % BAD_EVERY == 0:  # spread over the topics
            topic = spread[(sent // BAD_EVERY) % len(spread)]
            pending.append(await producer.send(topic, bad_message(rng, datetime.now(UTC)),
                                               key=b"bad-message"))
        pending.append(await producer.send(topic_of(event["type"]), encode(event),
                                           key=str(event["user_id"]).encode()))

    while not stop.is_set():
        wall = datetime.now(UTC)
        if to_epoch_ms(wall) >= day.plan.day_end_ms:
            day.next_day(model, wall, loop.time())
            for event in day.plan.history:
                await send(event)
        for event in day.player.due(loop.time() - day.started, to_epoch_ms(wall)):
            await send(event)
        # 1. wait for the acknowledgements of this tick's sends, so memory stays bounded
        #    and a broker error surfaces here; 2. sleep until the next tick or the stop.
        if pending:
            await asyncio.gather(*pending)
            pending.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick)
    return sent


async def _load_events(console: Console, producer: Any, events: list[Event],
                       days: int, topics: Sequence[str]) -> None:
    with Progress(TextColumn("loading {task.fields[days]} days of history"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,} events"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("history", total=len(events), days=days)
        await produce_events(producer, events,
                             progress=lambda n: progress.update(task, completed=n),
                             topics=topics)
    console.print(f"loaded {len(events):,} events of {days} days of history and today so far")


#: Seconds between two plain lines of the view when the output is not a terminal.
PLAIN_EVERY = 10.0


async def _live_view(console: Console, runtime: Runtime, stop: asyncio.Event, links: Links,
                     day: _Day) -> None:
    """The live view (stream/view.py), refreshed every second; plain lines every
    PLAIN_EVERY seconds when the output is not a terminal."""
    store = open_store(runtime.settings)
    health = runtime.health
    view = LiveView(links)
    last_total, last_time = _processed(health), time.monotonic()
    last_plain = 0.0
    caught_up = False
    loop = asyncio.get_running_loop()
    live = Live(console=console, auto_refresh=False, transient=False,
                vertical_overflow="crop") if console.is_terminal else None
    try:
        with live if live is not None else contextlib.nullcontext():
            while not stop.is_set():
                figs = await asyncio.to_thread(read_figures, store, runtime.worker.days, None,
                                               runtime.worker.clock)
                processed = _processed(health)
                now = time.monotonic()
                rate = (processed - last_total) / max(now - last_time, 1e-6)
                last_total, last_time = processed, now
                # Trends start once the worker has caught up on the history it found.
                caught_up = caught_up or (health.assigned and health.lag_total == 0)
                view.sample(figs, Pipeline(rate, health.lag_total, processed), now, caught_up)
                status = day.status(loop.time())
                if live is not None:
                    live.update(view.render(status, console.height), refresh=True)
                elif now - last_plain >= PLAIN_EVERY:
                    last_plain = now
                    print(view.plain_line(f"{datetime.now(UTC):%H:%M:%S} {status}"), flush=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
    finally:
        store.close()


def _processed(health: Any) -> float:
    total = 0.0
    for metric in health.processed.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


def run_generate(settings: Settings, users: int, rate: float, history_days: int) -> int:
    """Produce history (optional; today so far always) and then the rest of today as a
    compressed day at about `rate` events per second, as the demo does, to
    `settings.kafka_brokers`, in `settings.timezone`'s days."""
    if rate <= 0:
        print("engagement-stream: --rate must be more than 0", file=sys.stderr)
        return 2

    async def go() -> None:
        async with _producing(settings, users) as (stop, model, producer):
            day = _Day.begin(model, ZoneInfo(settings.timezone), history_days, rate,
                             DAY_MINUTES)
            await _load_events(Console(), producer, day.plan.history, history_days,
                               settings.topic_list)
            day.start(asyncio.get_running_loop().time())
            await _play(producer, model, day, stop, settings.topic_list)

    asyncio.run(go())
    return 0
