"""Sockets of the C-STORE receiver: TCP_NODELAY, DICOM TLS, shared ports (private).

:class:`VaultAssociationServer` is pynetdicom's threaded association server
with four changes: every accepted socket gets ``TCP_NODELAY`` (without it
Nagle's algorithm and delayed ACKs cost tens of milliseconds per instance),
associations run event-driven threads instead of pynetdicom's 1 ms polling
loops (:mod:`dicom_ingest._scp_reactor`),
the TLS handshake runs in the association's own thread rather than in the
accept loop (a slow or hostile client cannot stall other callers), and the
listening socket can share its port with sibling processes (``SO_REUSEPORT``).

:func:`server_tls_context` builds the PS3.15 Annex B context: TLS 1.2 or
newer, the library's modern cipher defaults, and client certificates verified
against a CA bundle when one is configured.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import ssl
from pathlib import Path

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_ingest._scp_reactor import VaultRequestHandler
from vault.settings import ScpSettings


def set_nodelay(sock: socket.socket) -> None:
    """Switch Nagle's algorithm off on a TCP socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class VaultAssociationServer(ThreadedAssociationServer):
    """Threaded association server with TCP_NODELAY, deferred TLS handshakes
    and optional ``SO_REUSEPORT``.

    ``reuse_port`` is a class attribute because pynetdicom builds the server
    itself (see :func:`server_class`).
    """

    reuse_port: bool = False
    daemon_threads = True

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("request_handler", VaultRequestHandler)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _bind_defaults(self) -> None:
        """Bind pynetdicom's default intervention handlers only: its standard
        logging handlers would log UIDs of every message at DEBUG level."""
        for event in evt._INTERVENTION_EVENTS:
            self.bind(event, evt.get_default_handler(event))

    def server_bind(self) -> None:
        set_nodelay(self.socket)
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        """Stop serving, abort open associations and close the listening socket.

        The server is made with ``AE.make_server`` and run by
        :class:`~dicom_ingest.scp.StorageScp`, not registered with the AE.
        """
        socketserver.TCPServer.shutdown(self)
        self.server_close()
        for assoc in self.active_associations:
            assoc.abort()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.socket.accept()
        set_nodelay(client)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address


def server_class(*, reuse_port: bool) -> type[VaultAssociationServer]:
    """The server class to hand to ``AE.make_server(server_class=...)``."""
    return type("VaultAssociationServer", (VaultAssociationServer,), {"reuse_port": reuse_port})


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


def peer_certificate_sha256(sock: socket.socket) -> str | None:
    """Hex SHA-256 of the peer's DER certificate on a TLS socket, else ``None``."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None
