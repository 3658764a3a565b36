"""The hospital PACS entry: a DICOM storage SCP (C-STORE, C-ECHO, storage commitment).

:class:`StorageScp` is thin wiring over pynetdicom: an application entity
with the policy's SOP classes x transfer syntaxes, Verification and Storage
Commitment Push Model; small event handlers (:mod:`dicom_ingest._scp_store`)
that admit only registered :class:`~vault.catalog.models.PacsNode` callers and
hand every instance to the one :class:`~dicom_ingest.pipeline.IngestPipeline`;
sockets with ``TCP_NODELAY`` and optional DICOM TLS
(:mod:`dicom_ingest._scp_transport`), served by event-driven association
threads instead of pynetdicom's 1 ms polling loops
(:mod:`dicom_ingest._scp_reactor`); and a timer thread settling idle studies
(:mod:`vault.settle`) and retrying undelivered storage-commitment reports
(:mod:`dicom_ingest.commitment_retry`). Concurrent associations share catalog transactions
(group commit, :mod:`dicom_ingest._group_commit`); ``scp.processes`` > 1
runs that many receiver processes on one listening socket, the least loaded
taking each new association (:class:`~dicom_ingest._scp_transport.AcceptBalance`).

Received data sets stay in memory: pynetdicom's option to spool them to
temporary files (``STORE_RECV_CHUNKED_DATASET``) is left off, so plaintext
never touches disk.

Example::

    with StorageScp(open_vault(settings), settings.scp) as scp:
        host, port = scp.address
        ...

Command line: ``dicom-vault scp`` (receiver only) or ``dicom-vault serve``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from dicom_ingest._scp_peers import PeerRegistry
from dicom_ingest._scp_processes import bound_the_stop, run_processes
from dicom_ingest._scp_store import (
    ReceiverContext,
    case_tag_for,
    handle_aborted,
    handle_closed,
    handle_conn_open,
    handle_echo,
    handle_requested,
    handle_store,
)
from dicom_ingest._scp_transport import (
    AcceptBalance,
    VaultAssociationServer,
    binding,
    checked_tls_context,
    client_tls_context,
    server_class,
)
from dicom_ingest.commitment import handle_commitment
from dicom_ingest.commitment_retry import receiver_settler
from dicom_ingest.pipeline import IngestPipeline
from dicom_ingest.validation import ValidationPolicy
from vault.core import Vault, open_vault
from vault.settings import ScpSettings, Settings
from vault.settle import StudySettledHooks
from vault.signals import StopSignal

__all__ = ["StorageScp", "build_ae", "run_scp"]

log = logging.getLogger(__name__)

# pynetdicom logs query/retrieve identifiers (names, IDs, dates) in full at
# INFO. The receiver answers no query today; should one be added, its
# identifiers must still stay out of the logs.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

_UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def build_ae(settings: ScpSettings, policy: ValidationPolicy) -> AE:
    """The application entity: AE title, PDU and association limits, contexts."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = settings.network_timeout_seconds
    transfer_syntaxes = sorted(policy.transfer_syntaxes)
    for sop_class in sorted(policy.sop_classes):
        ae.add_supported_context(sop_class, transfer_syntaxes)
    ae.add_supported_context(Verification, _UNCOMPRESSED)
    ae.add_supported_context(StorageCommitmentPushModel, _UNCOMPRESSED)
    return ae


def _handlers(context: ReceiverContext) -> list[tuple[evt.EventType, object, list[object]]]:
    return [
        (evt.EVT_CONN_OPEN, handle_conn_open, [context]),
        (evt.EVT_REQUESTED, handle_requested, [context]),
        (evt.EVT_C_ECHO, handle_echo, [context]),
        (evt.EVT_C_STORE, handle_store, [context]),
        (evt.EVT_N_ACTION, handle_commitment, [context]),
        (evt.EVT_ABORTED, handle_aborted, [context]),
        (evt.EVT_CONN_CLOSE, handle_closed, [context]),
    ]


class StorageScp:
    """The C-STORE receiver of one vault, started and stopped explicitly.

    Parameters
    ----------
    vault:
        Where instances go; its settings give the validation policy.
    settings:
        The receiver's settings; ``vault.settings.scp`` if omitted.
    hooks:
        Told about each study that settles (idle, or storage commitment).
    listener:
        A listening socket shared with sibling processes, instead of binding.
    balance:
        The siblings' open-association counts, so the least loaded accepts.
    settle:
        Run the idle-study timer thread (off in child processes).
    """

    def __init__(
        self,
        vault: Vault,
        settings: ScpSettings | None = None,
        *,
        hooks: StudySettledHooks | None = None,
        listener: socket.socket | None = None,
        balance: AcceptBalance | None = None,
        settle: bool = True,
    ) -> None:
        self._vault = vault
        self._settings = settings or vault.settings.scp
        self._hooks = hooks or StudySettledHooks()
        self._server_class = server_class(listener=listener, balance=balance)
        policy = ValidationPolicy.from_settings(vault.settings.policy)
        self._context = ReceiverContext(
            vault=vault,
            pipeline=IngestPipeline(vault, policy),
            peers=PeerRegistry(vault, self._settings),
            case_tag=case_tag_for(self._settings.case_attribute),
            hooks=self._hooks,
            ae_title=self._settings.ae_title,
            settings=self._settings,
        )
        self._ae = build_ae(self._settings, policy)
        self._server: VaultAssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._settler = receiver_settler(vault, self._settings, self._hooks) if settle else None

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); useful when the configured port is 0."""
        if self._server is None:
            raise RuntimeError("the receiver is not running")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def open_associations(self) -> int:
        """Associations admitted and not yet closed (their close not yet logged)."""
        return self._context.peers.open_count()

    @property
    def server(self) -> VaultAssociationServer | None:
        """The running association server (for inspection)."""
        return self._server

    def start(self) -> tuple[str, int]:
        """Bind and serve in background threads; return the bound address.

        Raises:
            ReceiverNotStarted: the address cannot be bound, or the TLS
                settings or files are wrong (the message says which).
        """
        tls = checked_tls_context(self._settings)
        if tls is not None:  # the files are known good now
            self._context = replace(self._context, client_tls=client_tls_context(self._settings))
        with binding(self._settings):
            server = self._ae.make_server(
                (self._settings.bind, self._settings.port),
                evt_handlers=_handlers(self._context),
                ssl_context=tls,
                server_class=self._server_class,
            )
        self._thread = threading.Thread(
            target=server.serve_forever, name="dicom-vault-scp", daemon=True
        )
        self._thread.start()
        self._server = server
        if self._settler is not None:
            self._settler.start()
        log.info("DICOM receiver %s listening on %s:%d", self._settings.ae_title, *self.address)
        return self.address

    def stop(self) -> None:
        """Stop accepting, abort open associations, stop the settle timer."""
        if self._settler is not None:
            self._settler.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> StorageScp:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_scp(
    settings: Settings,
    hooks: StudySettledHooks | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run the receiver until SIGTERM or SIGINT (``settings.scp.processes`` of them).

    With several processes this one binds the port and hands the listening
    socket to its children; each new association goes to the child with the
    fewest open ones, and a child that dies is replaced
    (:mod:`dicom_ingest._scp_processes`). This process keeps only the
    idle-study timer. ``on_ready`` is told the number of processes once every one of them
    serves (associations arriving sooner go to those already serving).

    Raises:
        ReceiverNotStarted: the address cannot be bound, the TLS settings are
            wrong, or a receiver process exited or did not start in time.
    """
    vault = open_vault(settings)
    if settings.scp.processes == 1:
        stopping = StopSignal()
        scp = StorageScp(vault, settings.scp, hooks=hooks)
        scp.start()
        if on_ready is not None:
            on_ready(1)
        try:
            stopping.wait()
        finally:
            bound_the_stop()
            scp.stop()
            vault.close()
        return
    _run_processes(vault, settings, hooks, on_ready)


def _run_processes(
    vault: Vault,
    settings: Settings,
    hooks: StudySettledHooks | None,
    on_ready: Callable[[int], None] | None,
) -> None:
    settler = receiver_settler(vault, settings.scp, hooks)
    try:
        run_processes(settings, settler, on_ready)
    finally:
        vault.close()
