"""Syslog over TLS as IHE ATNA uses it: RFC 5424 messages, RFC 5425 framing.

:func:`syslog_message` builds one RFC 5424 message carrying a DICOM Audit
Message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID IHE+RFC-3881 - BOM XML``,
facility 10 (security/authorization), severity notice for a success,
warning for a minor and error for a serious failure. :func:`octet_frame`
prefixes it with its length (RFC 5425 octet counting).

:class:`TlsSyslogSender` holds one TLS connection to the collector, made on
first use and again after a failure; the collector's certificate is verified
against ``ca_file`` (or the system CAs) and its host name, and a client
certificate is presented when one is configured (mutual TLS).
"""

from __future__ import annotations

import os
import socket
import ssl
from datetime import UTC, datetime

from vault.settings import AuditSyslogSettings

FACILITY_AUTH = 10
SEVERITY = {"0": 5, "4": 4, "8": 3, "12": 2}  # notice, warning, error, critical
MSGID = "IHE+RFC-3881"
BOM = "\ufeff"


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` long."""
    cleaned = "".join(c for c in value if 33 <= ord(c) <= 126)[:limit]
    return cleaned or "-"


def syslog_message(
    xml: str,
    *,
    indicator: str,
    at: datetime,
    hostname: str,
    app_name: str,
    procid: str | None = None,
) -> bytes:
    """One RFC 5424 message whose MSG is the UTF-8 audit message ``xml``."""
    pri = FACILITY_AUTH * 8 + SEVERITY.get(indicator, 4)
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = " ".join(
        (
            f"<{pri}>1",
            stamp,
            _field(hostname, 255),
            _field(app_name, 48),
            _field(procid or str(os.getpid()), 128),
            MSGID,
            "-",
        )
    )
    return f"{header} {BOM}{xml}".encode()


def octet_frame(message: bytes) -> bytes:
    """``message`` framed by octet counting (RFC 5425 section 4.3)."""
    return str(len(message)).encode("ascii") + b" " + message


def tls_context(settings: AuditSyslogSettings) -> ssl.SSLContext:
    """A client context verifying the collector, with the client certificate if set."""
    context = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.client_cert is not None:
        key = str(settings.client_key) if settings.client_key else None
        context.load_cert_chain(str(settings.client_cert), key)
    return context


class TlsSyslogSender:
    """Sends framed messages to the collector over one TLS connection."""

    def __init__(self, settings: AuditSyslogSettings) -> None:
        self._settings = settings
        self._context = tls_context(settings)
        self._socket: ssl.SSLSocket | None = None

    def _connect(self) -> ssl.SSLSocket:
        settings = self._settings
        raw = socket.create_connection(
            (settings.host, settings.port), timeout=settings.connect_timeout_seconds
        )
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return self._context.wrap_socket(raw, server_hostname=settings.host)
        except BaseException:
            raw.close()
            raise

    def send(self, frame: bytes) -> None:
        """Send one framed message; raises ``OSError`` (the connection is closed then)."""
        try:
            if self._socket is None:
                self._socket = self._connect()
            self._socket.sendall(frame)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None
