"""Storage commitment, push model (PS3.4 Annex J), as SCP of the receiver.

A PACS sends an N-ACTION (Request Storage Commitment) listing SOP instances;
the receiver answers it at once, then checks each instance and reports the
outcome with an N-EVENT-REPORT: Event Type 1 when every instance is
committed, 2 when some failed (Failed SOP Sequence, each with a Failure
Reason). An instance counts as committed only if it is in the catalog under
the caller's organisation AND re-reading it through
:func:`vault.reader.open_instance` (decrypting and authenticating every
segment) reproduces its catalogued SHA-256.

The report goes on the same association when the caller keeps it open,
otherwise on a new association to the node's ``host`` (``"host"`` or
``"host:port"``, port 104 if none), asking for the SCP role of the Storage
Commitment Push Model SOP Class. A commitment request also settles the
studies it names (:func:`vault.settle.settle_study`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select

from crypto.errors import CryptoError
from vault.audit import AuditRecord
from vault.catalog.models import Instance, PacsNode, Study
from vault.core import Vault
from vault.errors import VaultError
from vault.reader import open_instance
from vault.settle import settle_study

if TYPE_CHECKING:
    from dicom_ingest._scp_store import ReceiverContext

__all__ = [
    "COMMITMENT_INSTANCE_UID",
    "CommitmentOutcome",
    "check_commitment",
    "commitment_report",
    "handle_commitment",
]

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1
ALL_COMMITTED, SOME_FAILED = 1, 2
# Failure Reasons (PS3.4 Annex J.3.3.1.1).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
DEFAULT_PORT = 104
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class CommitmentOutcome:
    """Which referenced instances are committed and which failed (with reasons)."""

    committed: list[tuple[str, str]]
    failed: list[tuple[str, str, int]]
    study_ids: set[str]


def _verify(vault: Vault, instance_id: str) -> bool:
    """Decrypt the instance to the end: ``True`` if it matches its catalogued SHA-256."""
    try:
        with open_instance(vault, instance_id) as stream:
            while stream.read(_READ_CHUNK):
                pass
    except (VaultError, CryptoError) as exc:
        log.warning("commitment check failed for instance %s: %s", instance_id, type(exc).__name__)
        return False
    return True


def _find(vault: Vault, organisation_id: str, sop_instance_uid: str) -> Instance | None:
    digest = vault.index.digest("instance", sop_instance_uid)
    with vault.catalog.session() as session:
        return session.scalar(
            select(Instance)
            .join(Study, Study.id == Instance.study_id)
            .where(Instance.sop_uid_digest == digest, Study.organisation_id == organisation_id)
        )


def check_commitment(
    vault: Vault, organisation_id: str, references: Iterable[tuple[str, str]]
) -> CommitmentOutcome:
    """Check each ``(sop_class_uid, sop_instance_uid)`` of an organisation."""
    outcome = CommitmentOutcome([], [], set())
    for sop_class, sop_instance in references:
        row = _find(vault, organisation_id, sop_instance)
        if row is None:
            outcome.failed.append((sop_class, sop_instance, NO_SUCH_OBJECT_INSTANCE))
        elif row.sop_class_uid != sop_class:
            outcome.failed.append((sop_class, sop_instance, CLASS_INSTANCE_CONFLICT))
        elif not _verify(vault, row.id):
            outcome.failed.append((sop_class, sop_instance, PROCESSING_FAILURE))
        else:
            outcome.committed.append((sop_class, sop_instance))
            outcome.study_ids.add(row.study_id)
    return outcome


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def commitment_report(transaction_uid: str, outcome: CommitmentOutcome) -> tuple[int, Dataset]:
    """The N-EVENT-REPORT's Event Type ID and Event Information."""
    report = Dataset()
    report.TransactionUID = transaction_uid
    if outcome.committed:
        report.ReferencedSOPSequence = [_item(c, i) for c, i in outcome.committed]
    if outcome.failed:
        report.FailedSOPSequence = [_item(c, i, r) for c, i, r in outcome.failed]
    return (SOME_FAILED if outcome.failed else ALL_COMMITTED), report


def _references(request: Dataset) -> list[tuple[str, str]]:
    return [
        (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
        for item in request.get("ReferencedSOPSequence", [])
    ]


def _request_status(request: Dataset) -> int:
    """0 if the Action Information is a commitment request that can be answered, else
    the N-ACTION failure (PS3.7 C.4): an empty list could only be reported as
    "all committed" without the Referenced SOP Sequence that report requires."""
    if "TransactionUID" not in request or "ReferencedSOPSequence" not in request:
        return 0x0120  # Missing attribute
    items = request.ReferencedSOPSequence
    if not request.TransactionUID or not items:
        return 0x0121  # Missing attribute value
    if any(not item.get("ReferencedSOPClassUID") for item in items) or any(
        not item.get("ReferencedSOPInstanceUID") for item in items
    ):
        return 0x0121
    return 0x0000


def handle_commitment(event: Any, context: ReceiverContext) -> tuple[int, Dataset | None]:
    """EVT_N_ACTION: accept a commitment request and report on it in the background."""
    if event.request.RequestedSOPClassUID != StorageCommitmentPushModel:
        return 0x0118, None  # No such SOP Class
    if event.request.RequestedSOPInstanceUID != COMMITMENT_INSTANCE_UID:
        return 0x0117, None  # Invalid object instance (the well-known one is required)
    if event.request.ActionTypeID != REQUEST_COMMITMENT:
        return 0x0123, None  # No such action
    peer = context.peers.get(id(event.assoc))
    if peer is None:
        return 0x0124, None  # Refused: not authorised
    request = event.action_information
    status = _request_status(request)
    if status:
        return status, None
    job = _ReportJob(context, event.assoc, peer.node_id, peer.organisation_id, request)
    threading.Thread(target=job.run, name="dicom-vault-commitment", daemon=True).start()
    return 0x0000, None


class _ReportJob:
    """Checks the instances, settles their studies, sends the N-EVENT-REPORT."""

    def __init__(
        self,
        context: ReceiverContext,
        assoc: Any,
        node_id: str,
        organisation_id: str,
        request: Dataset,
    ) -> None:
        self._context = context
        self._assoc = assoc
        self._node_id = node_id
        self._organisation_id = organisation_id
        self._transaction_uid = str(request.TransactionUID)
        self._references = _references(request)

    def run(self) -> None:
        vault = self._context.vault
        outcome = check_commitment(vault, self._organisation_id, self._references)
        for study_id in sorted(outcome.study_ids):
            settle_study(vault, study_id, self._context.hooks)
        self._record(outcome)
        event_type, report = commitment_report(self._transaction_uid, outcome)
        sent = self._send_same_association(event_type, report) or self._send_new_association(
            event_type, report
        )
        log.info(
            "storage commitment for node %s: %d committed, %d failed, reported=%s",
            self._node_id,
            len(outcome.committed),
            len(outcome.failed),
            sent,
        )

    def _record(self, outcome: CommitmentOutcome) -> None:
        """The check read (decrypted) every instance asked about: it goes in the access log,
        before the report is sent."""
        requestor = self._assoc.requestor
        self._context.vault.audit.record(
            AuditRecord(
                actor=f"pacs:{self._node_id}",
                action="commitment.check",
                outcome="success" if not outcome.failed else "partial",
                object_type="pacs_node",
                object_id=self._node_id,
                remote=f"{requestor.address}:{requestor.port}",
                detail={
                    "committed": len(outcome.committed),
                    "failed": len(outcome.failed),
                    "studies": len(outcome.study_ids),
                },
            )
        )

    def _send_same_association(self, event_type: int, report: Dataset) -> bool:
        if not self._assoc.is_established:
            return False
        try:
            status, _reply = self._assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
            )
        except (RuntimeError, ValueError) as exc:
            log.info("commitment report not sent on the open association: %s", type(exc).__name__)
            return False
        return bool(status) and status.Status == 0x0000

    def _send_new_association(self, event_type: int, report: Dataset) -> bool:
        vault = self._context.vault
        with vault.catalog.session() as session:
            node = session.get(PacsNode, self._node_id)
            target = (node.ae_title, node.host) if node is not None and node.host else None
        if target is None:
            return False
        host, _sep, port = target[1].partition(":")
        ae = AE(ae_title=self._context.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        tls = self._context.client_tls
        assoc = ae.associate(
            host,
            int(port or DEFAULT_PORT),
            ae_title=target[0],
            ext_neg=[role],
            tls_args=(tls, host) if tls is not None else None,
        )
        if not assoc.is_established:
            return False
        try:
            status, _reply = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
            )
        finally:
            assoc.release()
        return bool(status) and status.Status == 0x0000
