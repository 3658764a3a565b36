"""Retrying storage-commitment reports that could not be delivered.

A report the receiver could not deliver stays ``pending`` in the catalog
(:mod:`dicom_ingest._commitment_store`). :class:`CommitmentRetrier` is a chore
of the receiver's settle timer (:class:`vault.settle.IdleSettler`, every
``scp.settle_check_seconds``), in whichever process runs that timer: the
receiver itself, the parent of ``scp.processes`` receivers, or ``serve``. It
is the same with or without a Celery broker, as idle settling is: the report
goes out under the receiver's AE title and TLS certificate, which workers
need not hold. :func:`receiver_settler` builds that timer.

Each due report is claimed (so two timers never send it twice), checked
again (an instance may have been stored since), sent on a new association to
the node's host, and then finished, scheduled again after its back-off, or
given up once out of attempts or time (logged and recorded without UIDs).
Finished transactions older than ``scp.commitment_remember_days`` are
forgotten.

Example::

    settler = receiver_settler(vault, settings.scp, hooks)
    settler.start()
"""

from __future__ import annotations

import logging
import ssl
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from crypto.errors import CryptoError
from dicom_ingest._commitment_send import ReportSender
from dicom_ingest._commitment_store import (
    PendingReport,
    claim,
    due_reports,
    forget_finished,
    open_report,
    out_of_time,
)
from dicom_ingest.commitment import (
    commitment_report,
    conclude_attempt,
    evaluate,
    report_given_up,
)
from vault.core import Vault
from vault.errors import VaultError
from vault.settings import ScpSettings
from vault.settle import IdleSettler, StudySettledHooks

__all__ = ["CommitmentRetrier", "receiver_settler"]

log = logging.getLogger("dicom_ingest.commitment")

_FAILURES = (SQLAlchemyError, VaultError, CryptoError)


class CommitmentRetrier:
    """Sends the pending reports that are due, one pass per :meth:`run_once`."""

    def __init__(
        self, vault: Vault, settings: ScpSettings, hooks: StudySettledHooks | None = None
    ) -> None:
        self._vault = vault
        self._settings = settings
        self._hooks = hooks
        self._sender: ReportSender | None = None

    def run_once(self) -> int:
        """Try every due report once; the number delivered."""
        sender = self._ready_sender()
        if sender is None:
            return 0
        delivered = 0
        for transaction_id in due_reports(self._vault):
            try:
                delivered += self._attempt(sender, transaction_id)
            except _FAILURES as exc:
                log.error("commitment report retry failed: %s", type(exc).__name__)
        forget_finished(self._vault, self._settings)
        return delivered

    def _ready_sender(self) -> ReportSender | None:
        if self._sender is None:
            try:
                self._sender = ReportSender.from_settings(self._settings)
            except (OSError, ssl.SSLError) as exc:
                log.error("commitment reports cannot be sent: TLS files, %s", type(exc).__name__)
                return None
        return self._sender

    def _lease(self) -> timedelta:
        """Long enough for one attempt: association, report and answer."""
        return timedelta(seconds=4 * self._settings.network_timeout_seconds)

    def _attempt(self, sender: ReportSender, transaction_id: str) -> int:
        if not claim(self._vault, transaction_id, lease=self._lease()):
            return 0  # another timer has it
        report = open_report(self._vault, transaction_id)
        if report is None:
            return 0
        if out_of_time(self._vault, self._settings, report):
            report_given_up(self._vault, transaction_id, report.node_id, report.attempts)
            return 0
        sent = self._send(sender, report)
        conclude_attempt(self._vault, self._settings, transaction_id, report.node_id, sent=sent)
        log.info("storage commitment report for node %s retried: reported=%s", report.node_id, sent)
        return int(sent)

    def _send(self, sender: ReportSender, report: PendingReport) -> bool:
        outcome = evaluate(
            self._vault, self._hooks, report.node_id, report.organisation_id, report.references
        )
        event_type, dataset = commitment_report(report.transaction_uid, outcome)
        return sender.to_node(self._vault, report.node_id, event_type, dataset)


def receiver_settler(
    vault: Vault, settings: ScpSettings, hooks: StudySettledHooks | None = None
) -> IdleSettler:
    """The receiver's timer: idle studies settle, pending commitment reports are retried."""
    retrier = CommitmentRetrier(vault, settings, hooks)
    return IdleSettler.from_settings(vault, settings, hooks, chores=[retrier.run_once])
