"""A TLS check of the Kafka brokers at start, so a wrong CA (or a broker that speaks no
TLS) stops the program with one line naming the setting instead of a worker that retries
forever, or a traceback.

The check is a TLS handshake with each bootstrap broker using the very context the Kafka
clients get (`KafkaConfig.ssl_context`: CA file, client certificate, host name checked).
A broker that cannot be reached is not judged here: the worker waits for it, as without
TLS.
"""

from __future__ import annotations

import socket
import ssl

from ..settings import Settings
from .config import KafkaConfig

#: Seconds for the connection and the handshake of each bootstrap broker.
CHECK_SECONDS = 10.0


def tls_problem(settings: Settings, timeout: float = CHECK_SECONDS) -> str | None:
    """One line saying why TLS to the brokers fails with these settings, or None (TLS not
    used, the handshake succeeded, or no broker could be reached to tell)."""
    context = KafkaConfig.from_settings(settings).ssl_context()
    if context is None:  # no TLS
        return None
    for part in settings.kafka_brokers.split(","):
        host, _, port = part.strip().rpartition(":")
        host = host.strip("[]")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as sock, \
                    context.wrap_socket(sock, server_hostname=host):
                return None  # one broker verified is enough: the clients use the same CA
        except ssl.SSLCertVerificationError as exc:
            if "mismatch" in str(exc.verify_message):
                return (f"bad setting STREAM_KAFKA_BROKERS: the certificate of {host}:{port} "
                        f"is not for that name (certificate verify failed: "
                        f"{exc.verify_message}); use the name the certificate is for")
            setting = ("STREAM_KAFKA_SSL_CAFILE" if settings.kafka_ssl_cafile
                       else "STREAM_KAFKA_SSL_CAFILE (unset: the system's CAs)")
            return (f"bad setting {setting}: the broker {host}:{port} presents a certificate "
                    f"it does not verify (certificate verify failed: {exc.verify_message}); "
                    f"give the CA that signed the brokers' certificates")
        except ssl.SSLError as exc:
            return (f"bad setting STREAM_KAFKA_SECURITY_PROTOCOL: TLS with the broker "
                    f"{host}:{port} fails ({exc.reason or exc}); is its listener TLS?")
        except OSError:
            continue  # not reachable now: the clients wait for it
    return None
