"""The `demo` and `generate` commands.

`demo` starts everything on free loopback ports: a Tansu broker (Kafka protocol, in
memory), a private redis-server, Prometheus when it is installed (with the shipped rules),
then loads 40 days of back history, runs the worker in this process, produces a live
stream, and shows the figures in the terminal. Ctrl-C (or `--duration`) stops every
process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..app import Runtime, open_store, read_figures, run_worker
from ..localservers import PrometheusServer, RedisServer, TansuBroker, free_port
from ..settings import Settings
from ..view import figures_table
from .generator import EventModel
from .producer import make_producer, produce_events, run_live

log = logging.getLogger("stream.demo")

#: Where the shipped Prometheus rules live in a checkout of the project.
RULES_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


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


def run_demo(settings: Settings, users: int, rate: float, history_days: int,
             duration: float | None, view: bool, prometheus: bool) -> int:
    """Run the embedded demo until Ctrl-C or `duration` seconds; returns the exit code."""
    console = Console()
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
        if prom is not None:
            console.print(f"prometheus {prom.url}\n"
                          f"  graphs   {_ui_page(prom.url, 'graph')}\n"
                          f"  alerts   {_ui_page(prom.url, 'alerts')}", soft_wrap=True)
        asyncio.run(_demo(settings, console, users, rate, history_days, duration, view))
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
    rules = sorted((RULES_DIR / "rules").glob("*.yml"))
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


async def _demo(settings: Settings, console: Console, users: int, rate: float,
                history_days: int, duration: float | None, view: bool) -> None:
    loop = asyncio.get_running_loop()
    async with _producing(settings, users) as (stop, model, producer):
        await _load_history(console, producer, model, history_days, settings.topic_list)
        started: asyncio.Future[Runtime] = loop.create_future()
        worker = asyncio.create_task(run_worker(settings, started, stop, install_signals=False))
        live = asyncio.create_task(run_live(producer, model, rate, stop,
                                            topics=settings.topic_list))
        runtime = await started
        if duration is not None:
            loop.call_later(duration, stop.set)
        if view:
            await _live_view(console, runtime, stop)
        else:
            await stop.wait()
        await asyncio.gather(worker, live)


async def _load_history(console: Console, producer: Any, model: EventModel, days: int,
                        topics: tuple[str, ...]) -> None:
    if days <= 0:
        return
    events = list(model.history(datetime.now(UTC), days=days))
    with Progress(TextColumn("loading {task.fields[days]} days of history"), BarColumn(),
                  TextColumn("{task.completed:,}/{task.total:,} events"),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task("history", total=len(events), days=days)
        await produce_events(producer, events,
                             progress=lambda n: progress.update(task, completed=n),
                             topics=topics)
    console.print(f"loaded {len(events):,} events of {days} days of history")


async def _live_view(console: Console, runtime: Runtime, stop: asyncio.Event) -> None:
    store = open_store(runtime.settings)
    health = runtime.health
    last_total, last_time = 0.0, time.monotonic()
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not stop.is_set():
                figs = await asyncio.to_thread(read_figures, store, runtime.settings)
                processed = _processed(health)
                now = time.monotonic()
                rate = (processed - last_total) / max(now - last_time, 1e-6)
                last_total, last_time = processed, now
                pipeline = Table(show_header=False, title="pipeline")
                pipeline.add_row("messages folded", f"{processed:,.0f}")
                pipeline.add_row("rate", f"{rate:,.0f} msg/s")
                pipeline.add_row("lag", f"{health.lag_total:,}")
                pipeline.add_row("metrics", f"http://127.0.0.1:{runtime.server.port}/metrics")
                pipeline.add_row("stop", "Ctrl-C")
                live.update(Group(figures_table(figs, "engagement (live)"), pipeline))
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
    """Produce history (optional) and then a live stream to `settings.kafka_brokers`."""

    async def go() -> None:
        async with _producing(settings, users) as (stop, model, producer):
            await _load_history(Console(), producer, model, history_days,
                                settings.topic_list)
            await run_live(producer, model, rate, stop, topics=settings.topic_list)

    asyncio.run(go())
    return 0
