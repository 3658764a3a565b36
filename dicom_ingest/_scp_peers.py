"""Who may send to the C-STORE receiver, and what each association did (private).

A calling AE title is admitted only if it is a registered, enabled
:class:`~vault.catalog.models.PacsNode`; optionally the peer address must
match the node's ``host``, and when the node has a ``cert_sha256`` the
association must come over TLS with exactly that client certificate.
Every admission, refusal and close is written to the access log as action
``association``, and to the operational log (:mod:`vault.logs`) with the
peer address and, once admitted, the registered node's AE title and the
association's count of instances stored and refused. The calling AE title
the caller sent is never logged (it is the caller's own text), only the
node's internal id (access log) or its registered title.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field

from sqlalchemy import select

from vault.admin import normalise_fingerprint
from vault.audit import AuditRecord
from vault.catalog.models import PacsNode
from vault.core import Vault
from vault.settings import ScpSettings

ACTION = "association"
log = logging.getLogger("dicom_ingest.scp")


@dataclass
class PeerSession:
    """One admitted association: the node it speaks for and what it did."""

    node_id: str
    organisation_id: str
    remote: str
    tls: bool
    ae_title: str = ""  # the registered node's, not the caller's string
    stored: int = 0  # answered success, duplicates included
    duplicates: int = 0  # of those, instances the vault already held
    refused: int = 0
    case_cache: dict[str, str | None] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"pacs:{self.node_id}"


@dataclass(frozen=True)
class CallerFacts:
    """What is known of a caller at A-ASSOCIATE-RQ time."""

    calling_ae_title: str
    address: str
    port: int
    tls: bool
    cert_sha256: str | None
    called_ae_title: str = ""

    @property
    def remote(self) -> str:
        return f"{self.address}:{self.port}"


class Refusal(Exception):
    """An association refused; ``reason`` goes to the access log."""

    def __init__(self, reason: str, node_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.node_id = node_id


def _addresses_of(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        return set()


class PeerRegistry:
    """Admits callers and keeps the session of each open association."""

    def __init__(self, vault: Vault, settings: ScpSettings) -> None:
        self._vault = vault
        self._settings = settings
        self._sessions: dict[int, PeerSession] = {}
        # Sessions taken out of _sessions whose close is not yet logged and
        # audited: they still count as open, so that "none open" means every
        # close is written (the peer may see the release before that).
        self._closing = 0
        self._lock = threading.Lock()

    def admit(self, key: int, caller: CallerFacts) -> PeerSession:
        """Check ``caller`` and open its session under ``key``.

        Raises:
            Refusal: unknown or disabled AE title, wrong address or certificate.
        """
        try:
            session = self._check(caller)
        except Refusal as refusal:
            self._audit(refusal.node_id, caller.remote, f"refused:{refusal.reason}", tls=caller.tls)
            log.info("association from %s refused: %s", caller.remote, refusal.reason)
            raise
        with self._lock:
            self._sessions[key] = session
        self._audit(session.node_id, session.remote, "open", tls=session.tls)
        log.info(
            "association from %s admitted: PACS node %s%s",
            session.remote,
            session.ae_title,
            " over TLS" if session.tls else "",
        )
        return session

    def _check(self, caller: CallerFacts) -> PeerSession:
        title = caller.calling_ae_title.strip()
        with self._vault.catalog.read_session() as db:
            node = db.scalar(select(PacsNode).where(PacsNode.ae_title == title))
            if node is None:
                raise Refusal("unknown-caller", None)
            if not node.enabled:  # the peer is told "not recognised" all the same
                raise Refusal("disabled-caller", node.id)
            node_id, organisation_id, ae_title = node.id, node.organisation_id, node.ae_title
            host, expected_cert = node.host, node.cert_sha256
        if self._settings.require_called_ae_title and (
            caller.called_ae_title.strip() != self._settings.ae_title.strip()
        ):
            raise Refusal("called-ae-title", node_id)
        if self._settings.check_peer_address and host and caller.address not in _addresses_of(host):
            raise Refusal("peer-address", node_id)
        if expected_cert:
            presented = caller.cert_sha256 or ""
            if normalise_fingerprint(presented) != normalise_fingerprint(expected_cert):
                raise Refusal("certificate", node_id)
        return PeerSession(node_id, organisation_id, caller.remote, caller.tls, ae_title)

    def get(self, key: int) -> PeerSession | None:
        with self._lock:
            return self._sessions.get(key)

    def close(self, key: int, *, aborted: bool) -> None:
        """Forget the session under ``key`` and log its close (no-op if none)."""
        with self._lock:
            session = self._sessions.pop(key, None)
            if session is None:
                return
            self._closing += 1
        try:
            self._log_close(session, "aborted" if aborted else "closed")
        finally:
            with self._lock:
                self._closing -= 1

    def _log_close(self, session: PeerSession, outcome: str) -> None:
        log.info(
            "association from %s (PACS node %s) %s: %d stored (%d already held), %d refused",
            session.remote,
            session.ae_title,
            outcome,
            session.stored,
            session.duplicates,
            session.refused,
        )
        self._audit(
            session.node_id,
            session.remote,
            outcome,
            tls=session.tls,
            stored=session.stored,
            refused=session.refused,
        )

    def open_count(self) -> int:
        """Sessions admitted whose close is not yet logged and audited."""
        with self._lock:
            return len(self._sessions) + self._closing

    def _audit(
        self, node_id: str | None, remote: str, outcome: str, *, tls: bool, **counts: int
    ) -> None:
        self._vault.audit.record(
            AuditRecord(
                actor=f"pacs:{node_id}" if node_id else "pacs:unknown",
                action=ACTION,
                outcome=outcome,
                object_type="pacs_node" if node_id else None,
                object_id=node_id,
                remote=remote,
                detail={"tls": tls, **counts},
            )
        )
