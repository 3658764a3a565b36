"""Sockets of the C-STORE receiver: TCP_NODELAY, DICOM TLS, shared ports (private).

:class:`VaultAssociationServer` is pynetdicom's threaded association server
with four changes: every accepted socket gets ``TCP_NODELAY`` (without it
Nagle's algorithm and delayed ACKs cost tens of milliseconds per instance),
associations run event-driven threads instead of pynetdicom's 1 ms polling
loops (:mod:`dicom_ingest._scp_reactor`),
the TLS handshake runs in the association's own thread rather than in the
accept loop (a slow or hostile client cannot stall other callers), and
several receiver processes can serve one listening socket, the least loaded
accepting each new association (:class:`AcceptBalance`).

Why not ``SO_REUSEPORT``: the kernel then picks a process by a hash of the
connection's addresses, blind to load. With four associations from one PACS
two processes were seen to take three and one, leaving a core half idle.
With one shared socket a process that holds more open associations than a
sibling leaves the next connection in the backlog for that sibling.

:func:`server_tls_context` builds the PS3.15 Annex B context: TLS 1.2 or
newer, the library's modern cipher defaults, and client certificates verified
against a CA bundle when one is configured.
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import ssl
import time
from collections.abc import Iterator, MutableSequence
from contextlib import contextmanager
from pathlib import Path

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_ingest._scp_reactor import VaultRequestHandler
from vault.errors import ReceiverNotStarted
from vault.settings import ScpSettings


def set_nodelay(sock: socket.socket) -> None:
    """Switch Nagle's algorithm off on a TCP socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


DECLINE_PAUSE_SECONDS = 0.002
"""How long a busier process waits after leaving a connection to a sibling."""
STALE_SECONDS = 2.0
"""A sibling that has not published for this long is taken for dead."""


class AcceptBalance:
    """Open-association counts of the receiver processes sharing one socket.

    Each process owns one slot of two shared arrays: its count of open
    associations and when it last published it. It publishes on every turn
    of its accept loop (at least twice a second) and before every accept,
    and accepts only when no live sibling has published fewer. A published
    count is never below the process's true count (it is raised on accept,
    lowered only by its owner), so the least loaded process never declines
    and a connection always finds one. A sibling silent for
    :data:`STALE_SECONDS` (it died) is left out of the comparison.
    """

    def __init__(
        self, counts: MutableSequence[int], beats: MutableSequence[float], slot: int
    ) -> None:
        self._counts = counts
        self._beats = beats
        self._slot = slot

    def publish(self, open_now: int) -> None:
        """Publish this process's count of open associations, and that it lives."""
        self._counts[self._slot] = open_now
        self._beats[self._slot] = time.monotonic()

    def may_accept(self, open_now: int) -> bool:
        """Publish ``open_now``; whether no live sibling holds fewer."""
        self.publish(open_now)
        now = time.monotonic()
        live = [
            count
            for count, beat in zip(self._counts, self._beats, strict=True)
            if now - beat < STALE_SECONDS
        ]
        return open_now <= min(live)

    def accepted(self, open_now: int) -> None:
        """Publish the count including the association just accepted."""
        self._counts[self._slot] = open_now


class VaultAssociationServer(ThreadedAssociationServer):
    """Threaded association server with TCP_NODELAY, deferred TLS handshakes
    and, for several receiver processes, a shared listening socket.

    ``listener`` and ``balance`` are class attributes because pynetdicom
    builds the server itself (see :func:`server_class`). The listener is
    already bound and listening, and non-blocking: a sibling may accept the
    connection this process was woken for.
    """

    listener: socket.socket | None = None
    balance: AcceptBalance | None = None
    daemon_threads = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("request_handler", VaultRequestHandler)
        self._accepted: list[socket.socket] = []
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _bind_defaults(self) -> None:
        """Bind pynetdicom's default intervention handlers only: its standard
        logging handlers would log UIDs of every message at DEBUG level."""
        for event in evt._INTERVENTION_EVENTS:
            self.bind(event, evt.get_default_handler(event))

    def server_bind(self) -> None:
        if self.listener is not None:
            self.socket.close()
            self.socket = self.listener
            self.server_address = self.listener.getsockname()
            if self.balance is not None:
                self.balance.publish(0)
            return
        set_nodelay(self.socket)
        super().server_bind()

    def server_activate(self) -> None:
        if self.listener is None:
            super().server_activate()

    def server_close(self) -> None:
        """Close this process's listening socket; a shared one is only closed,
        never shut down, as that would stop it listening for the siblings too."""
        if self.listener is None:
            super().server_close()
        else:
            self.socket.close()

    def shutdown(self) -> None:
        """Stop serving, abort open associations and close the listening socket.

        The server is made with ``AE.make_server`` and run by
        :class:`~dicom_ingest.scp.StorageScp`, not registered with the AE.
        """
        socketserver.TCPServer.shutdown(self)
        self.server_close()
        for assoc in self.active_associations:
            assoc.abort()

    def service_actions(self) -> None:
        """Each turn of the accept loop: publish the open count to siblings."""
        super().service_actions()
        if self.balance is not None:
            self.balance.publish(self.open_connections())

    def open_connections(self) -> int:
        """Accepted sockets not yet closed (an ended association closes its own)."""
        self._accepted = [sock for sock in self._accepted if sock.fileno() != -1]
        return len(self._accepted)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept the next connection, unless a sibling process is less loaded.

        Raises:
            BlockingIOError: left to a sibling, or a sibling took it first;
                ``socketserver`` then simply waits for the next one.
        """
        if self.balance is not None and not self.balance.may_accept(self.open_connections()):
            time.sleep(DECLINE_PAUSE_SECONDS)
            raise BlockingIOError("a less loaded receiver process takes this connection")
        client, address = self.socket.accept()
        set_nodelay(client)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        self._accepted.append(client)
        if self.balance is not None:
            self.balance.accepted(len(self._accepted))
        return client, address


def server_class(
    *, listener: socket.socket | None = None, balance: AcceptBalance | None = None
) -> type[VaultAssociationServer]:
    """The server class to hand to ``AE.make_server(server_class=...)``."""
    attributes = {"listener": listener, "balance": balance}
    return type("VaultAssociationServer", (VaultAssociationServer,), attributes)


def shared_listener(bind: str, port: int) -> socket.socket:
    """A bound, listening, non-blocking socket for receiver processes to share."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.create_server((bind, port), family=family, backlog=128)
    set_nodelay(sock)
    sock.setblocking(False)
    return sock


def checked_tls_context(settings: ScpSettings) -> ssl.SSLContext | None:
    """:func:`server_tls_context`, with what stops it said in plain words.

    Raises:
        ReceiverNotStarted: the settings are incomplete, a file cannot be
            read (the setting and path are named), or the certificate and
            key cannot be used.
    """
    for name in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(settings, name)
        if path is None:
            continue
        try:
            Path(path).open("rb").close()
        except OSError as exc:
            raise ReceiverNotStarted(f"scp.{name} ({path}) cannot be read: {_plain(exc)}") from exc
    try:
        return server_tls_context(settings)
    except ssl.SSLError as exc:
        detail = exc.reason or "not a usable certificate and key"
        raise ReceiverNotStarted(
            f"the DICOM TLS certificate or key cannot be used ({detail})"
        ) from exc
    except (ValueError, OSError) as exc:
        raise ReceiverNotStarted(f"the DICOM TLS settings cannot be used: {exc}") from exc


@contextmanager
def binding(settings: ScpSettings) -> Iterator[None]:
    """Report a failure to bind the receiver's address in plain words.

    Raises:
        ReceiverNotStarted: for any OSError raised inside (in use, not an
            address of this machine, a privileged port).
    """
    try:
        yield
    except OSError as exc:
        address = f"{settings.bind}:{settings.port}"
        raise ReceiverNotStarted(f"cannot listen for DICOM on {address}: {_plain(exc)}") from exc


def _plain(exc: OSError) -> str:
    """The operating system's words for ``exc`` (``Address already in use``)."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def server_tls_context(settings: ScpSettings) -> ssl.SSLContext | None:
    """The DICOM TLS server context, or ``None`` when no certificate is configured.

    Raises:
        ValueError: a certificate without its key, or a client certificate
            required without a CA to verify it.
        OSError, ssl.SSLError: the files cannot be read or do not match.
    """
    if settings.tls_cert is None:
        return None
    if settings.tls_key is None:
        raise ValueError("scp.tls_cert is set without scp.tls_key")
    if settings.require_client_cert and settings.tls_ca is None:
        raise ValueError("scp.require_client_cert needs scp.tls_ca")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(Path(settings.tls_cert), Path(settings.tls_key))
    if settings.tls_ca is not None:
        context.load_verify_locations(cafile=Path(settings.tls_ca))
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
        )
    return context


def client_tls_context(settings: ScpSettings) -> ssl.SSLContext | None:
    """The TLS context of the associations the receiver opens itself (a storage-
    commitment report sent to the PACS), or ``None`` when the receiver does not
    speak TLS.

    The receiver presents its own certificate and checks the PACS's against
    ``scp.tls_ca`` (the system's CAs when unset), host name included: the
    report names the instances it held, and goes to no one else. The
    certificate must allow client authentication for a PACS that asks for it.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ca = Path(settings.tls_ca) if settings.tls_ca is not None else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(Path(settings.tls_cert), Path(settings.tls_key))
    return context


def peer_certificate_sha256(sock: socket.socket) -> str | None:
    """Hex SHA-256 of the peer's DER certificate on a TLS socket, else ``None``."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None
