"""Every setting or start-up problem stops `python -m stream ...` with exactly one line on
stderr naming the setting and the fix, a defined non-zero exit code, and no traceback;
the worker instead waits for brokers that are unreachable at start (`/readyz` 503); an
interrupted backfill exits 130 even while Redis is down.

Each case runs the real command as a subprocess; the network cases use real servers
(a Tansu broker, redis-server) or a real socket holding a port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis

from stream.demo.localservers import RedisServer, TansuBroker, free_port
from tests.support.kafka import Topics, produce, unique_topics
from tests.support.workers import ROOT, WorkerProcess, wait_until, worker_env

#: Messages replayed by the backfill interrupted while Redis is down.
MESSAGES = 30_000

#: The exit code of every problem that stops a command at start.
CANNOT_START = 2


def run(*args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "stream", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def one_line(out: subprocess.CompletedProcess[str], code: int = CANNOT_START) -> str:
    """The single stderr line of a command that stopped at start with `code`."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert out.returncode == code, (out.returncode, out.stderr)
    assert lines[0].startswith("engagement-stream: "), lines[0]
    return lines[0]


# -- settings ----------------------------------------------------------------------------

#: (case, environment, the setting the line must name, the offending value it may show once)
SETTING_PROBLEMS: list[tuple[str, dict[str, str], str, str | None]] = [
    ("dlq topic among the inputs", {"STREAM_TOPICS": "engagement.activity,engagement.dlq",
                                    "STREAM_DLQ_TOPIC": "engagement.dlq"},
     "STREAM_DLQ_TOPIC", "engagement.dlq"),
    ("default dlq topic among the inputs",
     {"STREAM_TOPICS": "engagement.activity,engagement.dead-letter"},
     "STREAM_DLQ_TOPIC", "engagement.dead-letter"),
    ("topic with a space", {"STREAM_TOPICS": "engagement.activity,bad topic"},
     "STREAM_TOPICS", "bad topic"),
    ("topic with a slash", {"STREAM_TOPICS": "a/b"}, "STREAM_TOPICS", "a/b"),
    ("topic ..", {"STREAM_TOPICS": ".."}, "STREAM_TOPICS", None),
    ("topic .", {"STREAM_TOPICS": "engagement.activity,."}, "STREAM_TOPICS", None),
    ("topic of 250 characters", {"STREAM_TOPICS": "t" * 250}, "STREAM_TOPICS", "t" * 250),
    ("dlq topic with a space", {"STREAM_DLQ_TOPIC": "dead letters"},
     "STREAM_DLQ_TOPIC", "dead letters"),
    ("dlq topic .", {"STREAM_DLQ_TOPIC": "."}, "STREAM_DLQ_TOPIC", None),
    ("batch wait 0", {"STREAM_BATCH_WAIT_MS": "0"}, "STREAM_BATCH_WAIT_MS", None),
    ("heartbeat equal to the session timeout", {"STREAM_HEARTBEAT_INTERVAL_MS": "10000"},
     "STREAM_HEARTBEAT_INTERVAL_MS", None),
    ("heartbeat above a third of the session timeout",
     {"STREAM_SESSION_TIMEOUT_MS": "9000", "STREAM_HEARTBEAT_INTERVAL_MS": "3001"},
     "STREAM_HEARTBEAT_INTERVAL_MS", None),
    ("broker port above 65535", {"STREAM_KAFKA_BROKERS": "127.0.0.1:70000"},
     "STREAM_KAFKA_BROKERS", "127.0.0.1:70000"),
    ("broker port 0", {"STREAM_KAFKA_BROKERS": "k1:9092,k2:0"},
     "STREAM_KAFKA_BROKERS", "k2:0"),
    ("broker port not a number", {"STREAM_KAFKA_BROKERS": "kafka:ninety"},
     "STREAM_KAFKA_BROKERS", "kafka:ninety"),
    ("broker without a port", {"STREAM_KAFKA_BROKERS": "broker1"}, "STREAM_KAFKA_BROKERS",
     "broker1"),
    ("redis port not a number", {"STREAM_REDIS_URL": "redis://:hunter2@h:notaport/0"},
     "STREAM_REDIS_URL", None),
    ("redis unknown option", {"STREAM_REDIS_URL": "redis://:hunter2@h:6379/0?colour=blue"},
     "STREAM_REDIS_URL", None),
    ("redis bad option value",
     {"STREAM_REDIS_URL": "redis://:hunter2@h:6379/0?socket_timeout=soon"},
     "STREAM_REDIS_URL", None),
    ("redis tls option without rediss",
     {"STREAM_REDIS_URL": "redis://:hunter2@h:6379/0?ssl_ca_certs=/ca.pem"},
     "STREAM_REDIS_URL", None),
    ("redis bad ssl_cert_reqs",
     {"STREAM_REDIS_URL": "rediss://:hunter2@h:6379/0?ssl_cert_reqs=sometimes"},
     "STREAM_REDIS_URL", None),
    ("redis database not a number", {"STREAM_REDIS_URL": "redis://:hunter2@h:6379/zero"},
     "STREAM_REDIS_URL", None),
    ("metrics port not a number", {"STREAM_METRICS_PORT": "ninety"}, "STREAM_METRICS_PORT",
     "ninety"),
    ("unknown zone", {"STREAM_TIMEZONE": "Mars/Olympus"}, "STREAM_TIMEZONE", "Mars/Olympus"),
]


@pytest.mark.parametrize(("env", "setting", "value"),
                         [pytest.param(e, s, v, id=case) for case, e, s, v in SETTING_PROBLEMS])
def test_setting_problem_stops_the_worker_in_one_line(env: dict[str, str], setting: str,
                                                      value: str | None) -> None:
    # Nothing listens at these addresses: the settings must stop the worker before any
    # connection is tried (or the command would hang or log connection errors).
    dead = {"STREAM_KAFKA_BROKERS": f"127.0.0.1:{free_port()}",
            "STREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    line = one_line(run("worker", env={**dead, **env}, timeout=30))
    assert f"bad setting {setting}: " in line
    assert "hunter2" not in line  # a Redis URL may hold a password: never echoed
    if value is not None:
        assert line.count(value) == 1, line  # the value once, not twice


def test_setting_problem_given_as_a_flag_names_the_flag() -> None:
    line = one_line(run("worker", "--topics", "engagement.activity", "--dlq-topic",
                        "engagement.activity"))
    assert "bad setting --dlq-topic: " in line


@pytest.mark.parametrize("command", ["backfill", "generate", "report"])
def test_every_command_checks_the_settings(command: str) -> None:
    args = ["--from-offset", "0"] if command == "backfill" else []
    line = one_line(run(command, *args, env={"STREAM_KAFKA_BROKERS": "kafka:70000"}))
    assert "bad setting STREAM_KAFKA_BROKERS: " in line


@pytest.mark.parametrize(("args", "words"), [
    (["worker", "--metrics-port", "ninety"], "--metrics-port 'ninety' is not a whole number"),
    (["backfill"], "give --from-time or --from-offset"),
    (["backfill", "--from-offset", "-1"], "give an offset of 0 or more"),
    (["backfill", "--from-offset", "1", "--from-time", "2026-01-01"], "not both"),
    (["backfill", "--from-time", "yesterday"], "is not a time such as"),
    (["report", "--day", "2026-13-01"], "is not a date YYYY-MM-DD"),
    (["reprot"], "unknown command 'reprot'"),
    ([], "give a command"),
    (["worker", "--colour"], "unknown option --colour"),
])
def test_command_line_errors_are_one_line_in_plain_words(args: list[str], words: str) -> None:
    line = one_line(run(*args))
    assert words in line
    for jargon in ("usage:", "argument ", "invalid int value", "choose from", "error:"):
        assert jargon not in line


def test_version() -> None:
    from stream import __version__

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"engagement-stream {__version__}"


@pytest.mark.parametrize(("topic", "words"), [
    ("", "--topic is empty"),
    (",", "--topic is empty"),
    ("bad topic", "is not a Kafka topic name"),
    ("engagement.dead-letter", "is the dead-letter topic"),
])
def test_backfill_topic_problems(topic: str, words: str) -> None:
    line = one_line(run("backfill", "--topic", topic, "--from-offset", "0",
                        env={"STREAM_KAFKA_BROKERS": f"127.0.0.1:{free_port()}",
                             "STREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    assert words in line


# -- the metrics endpoint ------------------------------------------------------------------

def _worker_env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    return {"STREAM_KAFKA_BROKERS": f"127.0.0.1:{free_port()}",
            "STREAM_REDIS_URL": redis_server.url, **extra}


def test_metrics_port_in_use(redis_server: RedisServer) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = one_line(run("worker", env=_worker_env(
            redis_server, STREAM_METRICS_HOST="127.0.0.1", STREAM_METRICS_PORT=str(port))))
    assert "STREAM_METRICS_PORT" in line and "in use" in line


@pytest.mark.parametrize(("host", "words"), [
    ("nosuch.invalid", "does not resolve"),
    ("192.0.2.1", "Cannot assign requested address"),  # TEST-NET-1: no machine's address
    ("2001:db8::1", "Cannot assign requested address"),
])
def test_metrics_host_unresolvable_or_unbindable(redis_server: RedisServer, host: str,
                                                 words: str) -> None:
    line = one_line(run("worker", env=_worker_env(redis_server, STREAM_METRICS_HOST=host)))
    assert "STREAM_METRICS_HOST" in line and words in line


@pytest.mark.parametrize("host", ["nosuch.invalid", "192.0.2.1"])
def test_demo_with_a_bad_metrics_host_stops_before_starting_anything(host: str) -> None:
    line = one_line(run("demo", "--no-view", "--no-prometheus", "--metrics-host", host,
                        timeout=30))
    assert "STREAM_METRICS_HOST" in line


# -- unreachable brokers and Redis ---------------------------------------------------------

def test_generate_with_unreachable_brokers() -> None:
    port = free_port()
    line = one_line(run("generate", env={"STREAM_KAFKA_BROKERS": f"127.0.0.1:{port}"}))
    assert f"cannot reach the Kafka brokers 127.0.0.1:{port}" in line
    assert "STREAM_KAFKA_BROKERS" in line


def test_backfill_with_unreachable_brokers(redis_server: RedisServer) -> None:
    line = one_line(run("backfill", "--from-offset", "0", env=_worker_env(redis_server)))
    assert "cannot reach the Kafka brokers" in line and "STREAM_KAFKA_BROKERS" in line


def test_backfill_with_unreachable_redis(broker: TansuBroker, topics: Topics) -> None:
    line = one_line(run("backfill", "--from-offset", "0", env={
        "STREAM_KAFKA_BROKERS": broker.bootstrap, **topics.env(),
        "STREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    assert "cannot reach Redis" in line and "STREAM_REDIS_URL" in line


def test_report_with_unreachable_redis() -> None:
    line = one_line(run("report", env={
        "STREAM_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}), code=1)
    assert "cannot read Redis" in line


def test_worker_waits_for_unreachable_brokers_then_starts(redis_server: RedisServer) -> None:
    """The documented choice for the worker: brokers unreachable at start are waited for
    with /readyz 503 (alive, /metrics served), and the worker starts by itself once they
    come up."""
    names = unique_topics("wait")
    later = TansuBroker(port=free_port())
    env = worker_env(later.bootstrap, redis_server.url, names.env())
    with WorkerProcess(env) as worker:
        wait_until(lambda: worker.get("/healthz")[0] == 200, 30, "/healthz to answer")
        time.sleep(3)  # several attempts at the brokers
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        assert worker.get("/readyz")[0] == 503
        assert "engagement_worker_ready 0.0" in worker.get("/metrics")[1]
        assert "unreachable" in worker.log() and "Traceback" not in worker.log()
        try:
            later.start()
            later.create_topics(names.all, 2)
            wait_until(lambda: worker.get("/readyz")[0] == 200, 90,
                       "the worker to start once the brokers are up")
            assert worker.stop() == 0, worker.log()
        finally:
            later.stop()


def test_worker_waits_for_unreachable_redis_then_starts(broker: TansuBroker,
                                                        topics: Topics) -> None:
    """The same choice for Redis: not ready while it is unreachable, ready once it is up."""
    later = RedisServer(port=free_port())
    env = worker_env(broker.bootstrap, later.url, topics.env())
    with WorkerProcess(env) as worker:
        wait_until(lambda: worker.get("/healthz")[0] == 200, 30, "/healthz to answer")
        time.sleep(3)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()
        assert worker.get("/readyz")[0] == 503
        assert "Redis unavailable" in worker.log() and "Traceback" not in worker.log()
        try:
            later.start()
            wait_until(lambda: worker.get("/readyz")[0] == 200, 90,
                       "the worker to start once Redis is up")
            assert worker.stop() == 0, worker.log()
        finally:
            later.stop()


def test_worker_stopped_while_waiting_for_brokers_exits_0(redis_server: RedisServer) -> None:
    env = worker_env(f"127.0.0.1:{free_port()}", redis_server.url, unique_topics("w").env())
    with WorkerProcess(env) as worker:
        wait_until(lambda: worker.get("/healthz")[0] == 200, 30, "/healthz to answer")
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.log()
        assert time.monotonic() - started < 5
        assert "Traceback" not in worker.log()


# -- backfill interrupted ------------------------------------------------------------------

def test_backfill_interrupted_while_redis_is_down_exits_130(broker: TansuBroker,
                                                            topics: Topics) -> None:
    """Ctrl-C of a backfill that is waiting for Redis (killed after the backfill started)
    ends with the documented 130, the summary line and no traceback; a re-run with Redis
    back completes. Enough messages that the backfill is still running when Redis dies."""
    event = (b'{"event_id":"e%d","type":"activity","user_id":"u%d",'
             b'"ts":"2026-11-20T10:00:00Z"}')
    import asyncio

    asyncio.run(produce(broker.bootstrap,
                        [(topics.activity, None, event % (i, i)) for i in range(MESSAGES)]))
    assert MESSAGES > 1000
    server = RedisServer()
    server.start()
    try:
        settings = {"STREAM_KAFKA_BROKERS": broker.bootstrap, "STREAM_REDIS_URL": server.url,
                    **topics.env()}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAM_")},
               "PYTHONPATH": str(ROOT), **settings}
        client = redis.Redis.from_url(server.url)
        with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stream", "backfill", "--from-offset", "0",
                 "--no-progress"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                # The backfill records the store's parameters once it passed its start
                # checks; Redis dies right after, before the offsets are read.
                wait_until(lambda: client.exists("es:meta") == 1, 60,
                           "the backfill to open the store", interval=0.01)
                server.kill()
                wait_until(lambda: "Redis unavailable" in Path(log.name).read_text()
                           or proc.poll() is not None, 30,
                           "the backfill to wait for Redis")
                assert proc.poll() is None, Path(log.name).read_text()
                proc.send_signal(signal.SIGINT)
                assert proc.wait(30) == 130, Path(log.name).read_text()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            text = Path(log.name).read_text()
        assert "Traceback" not in text, text
        assert "backfill interrupted" in text
        server.start()
        again = run("backfill", "--from-offset", "0", "--no-progress", env=settings)
        # Redis came back with what its AOF kept: the re-run continues from there.
        assert again.returncode == 0, again.stderr
        assert "backfill done" in again.stderr
    finally:
        server.stop()


def _connected(pid: int, port: int) -> bool:
    """`pid` has an established TCP connection to `port` (from /proc: its socket inodes
    among the established IPv4 connections to that remote port)."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        remote_port = int(fields[2].rsplit(":", 1)[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:
            return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_backfill_interrupted_at_start_exits_130(redis_server: RedisServer,
                                                 sig: signal.Signals) -> None:
    """Interrupted while its start hangs on a frozen broker (before its own signal
    handlers are in place), the backfill still exits 130 without a traceback."""
    with TansuBroker() as frozen:
        names = unique_topics("frozen")
        frozen.create_topics(names.all, 1)
        frozen.pause()
        try:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("STREAM_")},
                   "PYTHONPATH": str(ROOT), "STREAM_KAFKA_BROKERS": frozen.bootstrap,
                   "STREAM_REDIS_URL": redis_server.url, **names.env()}
            proc = subprocess.Popen([sys.executable, "-m", "stream", "backfill",
                                     "--from-offset", "0", "--no-progress"], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    cwd=ROOT)
            try:
                wait_until(lambda: _connected(proc.pid, frozen.port), 60,
                           "the backfill to connect to the frozen broker", interval=0.1)
                time.sleep(0.5)
                proc.send_signal(sig)
                _, err = proc.communicate(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        finally:
            frozen.resume()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "backfill interrupted" in err
