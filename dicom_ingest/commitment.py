"""Storage commitment, push model (PS3.4 Annex J), as SCP of the receiver.

A PACS sends an N-ACTION (Request Storage Commitment) listing SOP instances;
the receiver answers it at once, then checks each instance and reports the
outcome with an N-EVENT-REPORT: Event Type 1 when every instance is
committed, 2 when some failed (Failed SOP Sequence, each with a Failure
Reason). An instance counts as committed only if it is in the catalog under
the caller's organisation AND re-reading it through
:func:`vault.reader.open_instance` (decrypting and authenticating every
segment) reproduces its catalogued SHA-256.

The report goes on the same association when the caller keeps it open
(unless ``scp.commitment_report_new_association``), otherwise on a new
association to the node's ``host`` (:mod:`dicom_ingest._commitment_send`). A
commitment request also settles the studies it names
(:func:`vault.settle.settle_study`).

Every accepted request is recorded in the catalog before it is answered
(:mod:`dicom_ingest._commitment_store`, its UIDs sealed): a report that cannot
be delivered stays pending and is retried with back-off by the receiver's
settle timer (:mod:`dicom_ingest.commitment_retry`), re-checked at each
attempt, until delivered or given up after ``scp.commitment_report_attempts``
attempts or ``scp.commitment_report_max_age_hours`` (logged without UIDs,
recorded as ``commitment.give-up``).

A Transaction UID identifies one request (PS3.4 J.3.2). A repeat from the same
node with the same Transaction UID and the same references is the same
transaction (a PACS that missed the report and asks again): it is answered
with success and reported again. The same Transaction UID with other
references is a duplicate transaction: the N-ACTION is answered with success
(it only says the request was received) and the report fails every instance
with Failure Reason 0x0131 "Duplicate transaction UID" (PS3.3 C.14.1.1),
leaving the first transaction as it was. An N-ACTION that cannot be recorded
is answered 0x0213 (resource limitation): the PACS keeps its copies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from crypto.errors import CryptoError
from dicom_ingest._commitment_send import COMMITMENT_INSTANCE_UID, ReportSender
from dicom_ingest._commitment_store import (
    References,
    admit,
    delivered_attempt,
    failed_attempt,
    give_up,
)
from vault.audit import AuditRecord
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.errors import VaultError
from vault.reader import open_instance
from vault.settings import ScpSettings
from vault.settle import StudySettledHooks, settle_study

if TYPE_CHECKING:
    from dicom_ingest._scp_peers import PeerSession
    from dicom_ingest._scp_store import ReceiverContext

__all__ = [
    "COMMITMENT_INSTANCE_UID",
    "CommitmentOutcome",
    "check_commitment",
    "commitment_report",
    "conclude_attempt",
    "evaluate",
    "handle_commitment",
]

log = logging.getLogger(__name__)

REQUEST_COMMITMENT = 1
ALL_COMMITTED, SOME_FAILED = 1, 2
# Failure Reasons (PS3.3 C.14.1.1).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
DUPLICATE_TRANSACTION_UID = 0x0131
# N-ACTION status when the request cannot be recorded (PS3.7 C.4.1.1.2).
RESOURCE_LIMITATION = 0x0213
_READ_CHUNK = 1024 * 1024
_RECORD_FAILURES = (SQLAlchemyError, VaultError, CryptoError)


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
    with vault.catalog.read_session() as session:
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


def _request_check(event: Any, peer: PeerSession | None) -> int:
    """0 if the N-ACTION is a commitment request of an admitted caller, else its failure."""
    if event.request.RequestedSOPClassUID != StorageCommitmentPushModel:
        return 0x0118  # No such SOP Class
    if event.request.RequestedSOPInstanceUID != COMMITMENT_INSTANCE_UID:
        return 0x0117  # Invalid object instance (the well-known one is required)
    if event.request.ActionTypeID != REQUEST_COMMITMENT:
        return 0x0123  # No such action
    if peer is None:
        return 0x0124  # Refused: not authorised
    return _request_status(event.action_information)


def handle_commitment(event: Any, context: ReceiverContext) -> tuple[int, Dataset | None]:
    """EVT_N_ACTION: record a commitment request and report on it in the background."""
    peer = context.peers.get(id(event.assoc))
    status = _request_check(event, peer)
    if status or peer is None:
        return status, None
    request = event.action_information
    transaction_uid, references = str(request.TransactionUID), _references(request)
    try:
        admission = admit(
            context.vault,
            context.settings,
            peer.node_id,
            peer.organisation_id,
            transaction_uid,
            references,
        )
    except _RECORD_FAILURES as exc:
        log.error("commitment request not recorded: %s", type(exc).__name__)
        return RESOURCE_LIMITATION, None
    asked = _Asked(peer.node_id, peer.organisation_id, transaction_uid, references)
    job = _ReportJob(context, event.assoc, asked, admission.transaction_id)
    threading.Thread(target=job.run, name="dicom-vault-commitment", daemon=True).start()
    return 0x0000, None


@dataclass(frozen=True)
class _Asked:
    node_id: str
    organisation_id: str
    transaction_uid: str
    references: References


def evaluate(
    vault: Vault,
    hooks: StudySettledHooks | None,
    node_id: str,
    organisation_id: str,
    references: References,
    *,
    remote: str | None = None,
) -> CommitmentOutcome:
    """Check the references, settle the studies they name, and record the check
    (it read every instance asked about) in the access log."""
    outcome = check_commitment(vault, organisation_id, references)
    for study_id in sorted(outcome.study_ids):
        settle_study(vault, study_id, hooks)
    vault.audit.record(
        AuditRecord(
            actor=f"pacs:{node_id}",
            action="commitment.check",
            outcome="success" if not outcome.failed else "partial",
            object_type="pacs_node",
            object_id=node_id,
            remote=remote,
            detail={
                "committed": len(outcome.committed),
                "failed": len(outcome.failed),
                "studies": len(outcome.study_ids),
            },
        )
    )
    return outcome


def duplicate_outcome(references: References) -> CommitmentOutcome:
    """Every instance of a request reusing a known Transaction UID, failed as such."""
    failed = [(c, i, DUPLICATE_TRANSACTION_UID) for c, i in references]
    return CommitmentOutcome([], failed, set())


def conclude_attempt(
    vault: Vault, settings: ScpSettings, transaction_id: str, node_id: str, *, sent: bool
) -> bool:
    """Record one delivery attempt; give the report up when it was the last allowed.
    Returns whether the report is still pending."""
    if sent:
        delivered_attempt(vault, transaction_id)
        return False
    attempts = failed_attempt(vault, settings, transaction_id)
    if attempts < settings.commitment_report_attempts:
        return True
    report_given_up(vault, transaction_id, node_id, attempts)
    return False


def report_given_up(vault: Vault, transaction_id: str, node_id: str, attempts: int) -> None:
    """Give a report up: the row finished, a log line and an access-log record (no UIDs)."""
    give_up(vault, transaction_id)
    log.warning(
        "storage commitment report for node %s given up after %d attempt(s)", node_id, attempts
    )
    vault.audit.record(
        AuditRecord(
            actor="system",
            action="commitment.give-up",
            outcome="failure",
            object_type="pacs_node",
            object_id=node_id,
            detail={"transaction": transaction_id, "attempts": attempts},
        )
    )


class _ReportJob:
    """Checks the instances, settles their studies, sends the N-EVENT-REPORT, and
    records the attempt (a duplicate's report is sent once, not recorded)."""

    def __init__(
        self, context: ReceiverContext, assoc: Any, asked: _Asked, transaction_id: str | None
    ) -> None:
        self._context = context
        self._assoc = assoc
        self._asked = asked
        self._transaction_id = transaction_id

    def run(self) -> None:
        outcome = self._outcome()
        event_type, report = commitment_report(self._asked.transaction_uid, outcome)
        sent = self._send(event_type, report)
        pending = False
        if self._transaction_id is not None:
            pending = self._conclude(self._transaction_id, sent)
        log.info(
            "storage commitment for node %s: %d committed, %d failed, reported=%s%s",
            self._asked.node_id,
            len(outcome.committed),
            len(outcome.failed),
            sent,
            ", to retry" if pending else "",
        )

    def _outcome(self) -> CommitmentOutcome:
        if self._transaction_id is None:
            log.warning("duplicate Transaction UID from node %s", self._asked.node_id)
            return duplicate_outcome(self._asked.references)
        requestor = self._assoc.requestor
        return evaluate(
            self._context.vault,
            self._context.hooks,
            self._asked.node_id,
            self._asked.organisation_id,
            self._asked.references,
            remote=f"{requestor.address}:{requestor.port}",
        )

    def _send(self, event_type: int, report: Dataset) -> bool:
        context = self._context
        sender = ReportSender(
            context.ae_title, context.client_tls, context.settings.network_timeout_seconds
        )
        if not context.settings.commitment_report_new_association and sender.on_association(
            self._assoc, event_type, report
        ):
            return True
        return sender.to_node(context.vault, self._asked.node_id, event_type, report)

    def _conclude(self, transaction_id: str, sent: bool) -> bool:
        try:
            return conclude_attempt(
                self._context.vault,
                self._context.settings,
                transaction_id,
                self._asked.node_id,
                sent=sent,
            )
        except _RECORD_FAILURES as exc:  # the row stays pending: the timer retries it
            log.error("commitment attempt not recorded: %s", type(exc).__name__)
            return True
