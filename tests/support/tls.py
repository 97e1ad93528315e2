"""TLS for tests: certificates made with the `openssl` command, and a TLS-terminating
proxy (Python's `ssl`) in front of a plaintext server, e.g. the embedded broker, which
has no working TLS listener of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(into: Path, name: str = "ca") -> Certs:
    """A CA and a server certificate it signs, for 127.0.0.1 and localhost."""
    into.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=into)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        f"/CN=test {name}", "-keyout", f"{name}.key", "-out", f"{name}.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", f"{name}-server.key", "-out", f"{name}-server.csr")
    (into / f"{name}-ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", f"{name}-server.csr", "-CA", f"{name}.pem", "-CAkey",
        f"{name}.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}-ext.cnf",
        "-out", f"{name}-server.pem")
    return Certs(into / f"{name}.pem", into / f"{name}-server.pem", into / f"{name}-server.key")


class TlsProxy:
    """Accepts TLS on 127.0.0.1:`port` (and 127.0.0.2:`port`) and relays each
    connection's plaintext to 127.0.0.1:`target`, on an event loop of its own thread."""

    def __init__(self, port: int, target: int, certs: Certs) -> None:
        self.port = port
        self.target = target
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(certs.cert, certs.key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TlsProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            # 127.0.0.2 too: a loopback name the certificate is not for.
            asyncio.start_server(self._serve, ["127.0.0.1", "127.0.0.2"], self.port,
                                 ssl=self._context),
            self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError, ConnectionError, ssl.SSLError, RuntimeError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def __enter__(self) -> TlsProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
