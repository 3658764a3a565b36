"""Storage-commitment transactions in the catalog (private): admission, retry state.

Every commitment request the receiver accepts is recorded before it is
answered (:func:`admit`), so a report that cannot be delivered, or a
receiver that stops before delivering it, loses nothing: the row stays
``pending`` with its next attempt time until :func:`finish` marks it
``reported`` or ``given-up``. The Transaction UID and the references the
report must quote are sealed under the row's own data key
(:func:`vault.dsr_sealing.seal_text`), bound to the row's id; finishing
destroys that key and clears them, leaving only keyed digests, kept for
``scp.commitment_remember_days`` (:func:`forget_finished`).

A row is worked on by one sender at a time: whoever moves its
``next_attempt_at`` from the value it read (:func:`claim`) owns the attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from vault.catalog.commitments import GIVEN_UP, PENDING, REPORTED, CommitmentTransaction
from vault.catalog.models import new_id
from vault.core import Vault
from vault.dsr_sealing import open_text, seal_text
from vault.settings import ScpSettings

References = list[tuple[str, str]]
AdmissionKind = Literal["new", "repeat", "conflict"]


@dataclass(frozen=True)
class Admission:
    """What a commitment request is: a new transaction, an identical repeat of a
    known one (same node, Transaction UID and references), or a conflicting reuse
    of a known Transaction UID; ``transaction_id`` is the row (None on conflict)."""

    kind: AdmissionKind
    transaction_id: str | None


@dataclass(frozen=True)
class PendingReport:
    """What a retry needs, opened from a pending row."""

    transaction_id: str
    node_id: str
    organisation_id: str
    transaction_uid: str
    references: References
    attempts: int
    received_at: datetime


def _context(transaction_id: str) -> str:
    return f"commitment:{transaction_id}:request"


def _request_text(transaction_uid: str, references: References) -> str:
    return json.dumps([transaction_uid, sorted(references)], separators=(",", ":"))


def first_lease(settings: ScpSettings) -> timedelta:
    """How long the receiver's own first attempt owns a new row."""
    return timedelta(seconds=settings.commitment_retry_seconds)


def backoff(attempts: int, settings: ScpSettings) -> timedelta:
    """The wait after attempt number ``attempts`` (1-based): doubling, capped."""
    delay = settings.commitment_retry_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(delay, settings.commitment_retry_max_seconds))


@dataclass(frozen=True)
class _Request:
    node_id: str
    organisation_id: str
    transaction_uid: str
    references: References
    transaction_digest: str
    request_digest: str


def admit(
    vault: Vault,
    settings: ScpSettings,
    node_id: str,
    organisation_id: str,
    transaction_uid: str,
    references: References,
) -> Admission:
    """Record a commitment request of ``node_id``, or say how it repeats a known one.

    An identical repeat of a finished transaction is opened again (pending, with
    its references sealed anew); of a pending one, left as it is.

    Raises:
        SQLAlchemyError, VaultError, CryptoError: the catalog or the key
            provider failed; nothing was recorded.
    """
    text = _request_text(transaction_uid, references)
    asked = _Request(
        node_id,
        organisation_id,
        transaction_uid,
        references,
        vault.index.digest("transaction", transaction_uid),
        vault.index.digest("commitment-request", text),
    )
    known = _known(vault, asked)
    if known is not None and known.request_digest != asked.request_digest:
        return Admission("conflict", None)
    if known is not None and known.state == PENDING:
        return Admission("repeat", known.id)
    try:
        row_id = _write(vault, settings, asked, known.id if known is not None else None)
    except IntegrityError:  # the same Transaction UID, admitted meanwhile
        return admit(vault, settings, node_id, organisation_id, transaction_uid, references)
    return Admission("new" if known is None else "repeat", row_id)


def _known(vault: Vault, asked: _Request) -> CommitmentTransaction | None:
    with vault.catalog.read_session() as session:
        return session.scalar(
            select(CommitmentTransaction).where(
                CommitmentTransaction.node_id == asked.node_id,
                CommitmentTransaction.transaction_digest == asked.transaction_digest,
            )
        )


def _write(vault: Vault, settings: ScpSettings, asked: _Request, reopen: str | None) -> str:
    """Seal the request under a new key into a new row, or into row ``reopen``."""
    row_id = reopen or new_id()
    pending = vault.keyring.generate()
    text = _request_text(asked.transaction_uid, asked.references)
    now = vault.clock.now()
    values = {
        "key_id": pending.key.key_id,
        "references_sealed": seal_text(pending.key, text, _context(row_id)),
        "state": PENDING,
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now + first_lease(settings),
        "finished_at": None,
    }
    with vault.catalog.session() as session:
        vault.keyring.persist(session, pending)
        session.flush()
        if reopen is None:
            session.add(
                CommitmentTransaction(
                    id=row_id,
                    node_id=asked.node_id,
                    organisation_id=asked.organisation_id,
                    transaction_digest=asked.transaction_digest,
                    request_digest=asked.request_digest,
                    **values,
                )
            )
        else:
            session.execute(
                update(CommitmentTransaction)
                .where(CommitmentTransaction.id == reopen)
                .values(**values)
            )
    return row_id


def claim(vault: Vault, transaction_id: str, *, lease: timedelta, due: bool = True) -> bool:
    """Own the next attempt on a pending row for ``lease``: ``False`` if another
    sender has it (or, with ``due``, its next attempt is not due yet)."""
    now = vault.clock.now()
    condition = [
        CommitmentTransaction.id == transaction_id,
        CommitmentTransaction.state == PENDING,
    ]
    if due:
        condition.append(CommitmentTransaction.next_attempt_at <= now)
    with vault.catalog.session() as session:
        result = session.execute(
            update(CommitmentTransaction).where(*condition).values(next_attempt_at=now + lease)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def due_reports(vault: Vault, *, limit: int = 100) -> list[str]:
    """Pending rows whose next attempt is due, oldest first."""
    with vault.catalog.read_session() as session:
        return list(
            session.scalars(
                select(CommitmentTransaction.id)
                .where(
                    CommitmentTransaction.state == PENDING,
                    CommitmentTransaction.next_attempt_at <= vault.clock.now(),
                )
                .order_by(CommitmentTransaction.next_attempt_at)
                .limit(limit)
            )
        )


def open_report(vault: Vault, transaction_id: str) -> PendingReport | None:
    """The sealed request of a pending row, opened; ``None`` if no longer pending.

    Raises:
        CryptoError: the sealed bytes were altered.
    """
    with vault.catalog.read_session() as session:
        row = session.get(CommitmentTransaction, transaction_id)
        if row is None or row.state != PENDING or row.key_id is None:
            return None
        sealed = row.references_sealed
        key_id = row.key_id
    if sealed is None:
        return None
    key = vault.keyring.data_key(key_id)
    transaction_uid, references = json.loads(open_text(key, sealed, _context(transaction_id)))
    return PendingReport(
        transaction_id=transaction_id,
        node_id=row.node_id,
        organisation_id=row.organisation_id,
        transaction_uid=str(transaction_uid),
        references=[(str(c), str(i)) for c, i in references],
        attempts=row.attempts,
        received_at=row.received_at,
    )


def failed_attempt(vault: Vault, settings: ScpSettings, transaction_id: str) -> int:
    """Count a failed delivery and schedule the next; the attempts made so far."""
    with vault.catalog.session() as session:
        row = session.get(CommitmentTransaction, transaction_id)
        if row is None or row.state != PENDING:
            return 0
        row.attempts += 1
        row.next_attempt_at = vault.clock.now() + backoff(row.attempts, settings)
        return row.attempts


def delivered_attempt(vault: Vault, transaction_id: str) -> None:
    """Count the delivering attempt, then :func:`finish` the row as reported."""
    with vault.catalog.session() as session:
        row = session.get(CommitmentTransaction, transaction_id)
        if row is not None:
            row.attempts += 1
    finish(vault, transaction_id, REPORTED)


def out_of_time(vault: Vault, settings: ScpSettings, report: PendingReport) -> bool:
    """Whether a pending report has used its attempts or outlived its maximum age."""
    age = vault.clock.now() - report.received_at
    return report.attempts >= settings.commitment_report_attempts or age >= timedelta(
        hours=settings.commitment_report_max_age_hours
    )


def finish(vault: Vault, transaction_id: str, state: str) -> None:
    """End a row (``reported`` or ``given-up``): its key destroyed, its UIDs cleared."""
    with vault.catalog.session() as session:
        row = session.get(CommitmentTransaction, transaction_id)
        if row is None or row.state != PENDING:
            return
        if row.key_id is not None:
            vault.keyring.destroy(row.key_id, session=session)
        row.state = state
        row.references_sealed = None
        row.next_attempt_at = None
        row.finished_at = vault.clock.now()


def give_up(vault: Vault, transaction_id: str) -> None:
    """:func:`finish` a row as given up."""
    finish(vault, transaction_id, GIVEN_UP)


def forget_finished(vault: Vault, settings: ScpSettings) -> int:
    """Delete finished rows older than ``scp.commitment_remember_days``; how many."""
    days = settings.commitment_remember_days
    cutoff = vault.clock.now() - timedelta(days=days)
    with vault.catalog.session() as session:
        result = session.execute(
            delete(CommitmentTransaction).where(
                CommitmentTransaction.state != PENDING,
                CommitmentTransaction.finished_at < cutoff,
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
