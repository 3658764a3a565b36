"""Keeping the access log 12 months, and keeping it verifiable afterwards.

:func:`purge_audit` deletes the oldest records, those older than
``retention.audit_retention_days``. Before deleting, it stores a ``purge``
checkpoint: the sequence number and hash of the last purged record, with an
HMAC under the key provider's MAC key for purpose ``audit-checkpoint``. The
chain is then verified from that hash instead of the genesis.

:func:`write_checkpoint` stores a ``periodic`` checkpoint of the chain's
current last record (the purge job and ``dicom-vault audit checkpoint`` write
one). A checkpoint pins its record: deleting the records at the tail of the
log back past a checkpoint, or rewriting the chain before one (even with every
hash recomputed), is detected by :func:`verify_audit`, because whoever edits
the catalog does not hold the MAC key. Checkpoints are chained to one another
and must come at least every 36 hours (:mod:`vault.audit_checkpoints`), and
each ``audit.checkpoint`` or ``audit.purge`` record must have its checkpoint,
so that dropping checkpoints to rewrite what they pinned is detected too. A
``backup.restore`` record is pinned the same way as it is written, so the
log of a restored catalog is signed from its first moment. Records appended
after the last checkpoint are protected by the unkeyed hash chain alone,
which a catalog writer can recompute: the daily checkpoint bounds that.

A purge never takes the chain head: appends continue from the last record in
the table, and the records that follow a purge are walked from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from crypto.keys import MacKey
from vault.audit import AuditRecord, ChainBreak, ChainStart, lock_chain
from vault.audit_checkpoints import genuine, link_breaks, sign, time_gaps
from vault.audit_verify import verify_chain
from vault.catalog.models import AuditEvent
from vault.catalog.retention import AuditCheckpoint
from vault.core import Vault
from vault.mac_purposes import AUDIT_CHECKPOINT

CHECKPOINT_KEY_PURPOSE = AUDIT_CHECKPOINT
# Each pinned by a checkpoint as it is written: the log's own upkeep, and a
# restore, after which the catalog is not the one whose records came before.
CHECKPOINTED_ACTIONS = ("audit.checkpoint", "audit.purge", "backup.restore")


def _checkpoint_key(vault: Vault) -> MacKey:
    return vault.keyring.provider.mac_key(CHECKPOINT_KEY_PURPOSE)


def _last_event(session: Session) -> AuditEvent | None:
    return session.scalar(select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(1))


def _last_checkpoint(session: Session) -> AuditCheckpoint | None:
    query = select(AuditCheckpoint).order_by(AuditCheckpoint.number.desc()).limit(1)
    return session.scalar(query)


def _checkpoint_tail(session: Session, vault: Vault, key: MacKey) -> AuditCheckpoint | None:
    last = _last_event(session)
    if last is None:
        return None
    previous = _last_checkpoint(session)
    checkpoint = sign(key, "periodic", last, vault.clock.now(), previous)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def record_pinned(vault: Vault, record: AuditRecord) -> AuditCheckpoint | None:
    """Record ``record`` and pin it, in the same transaction, with a signed checkpoint.

    Returns:
        The checkpoint written (``None`` only if the log is empty, which
        recording the action makes impossible).
    """
    key = _checkpoint_key(vault)
    with vault.catalog.session() as session:
        lock_chain(session)
        vault.audit.record(record, session=session)
        return _checkpoint_tail(session, vault, key)


def write_checkpoint(vault: Vault, *, actor: str = "system") -> AuditCheckpoint | None:
    """Record ``audit.checkpoint`` and pin it with a signed checkpoint."""
    return record_pinned(vault, AuditRecord(actor, "audit.checkpoint"))


def _purge_point(session: Session, cutoff: datetime) -> AuditEvent | None:
    """The last record of the longest prefix of the chain older than ``cutoff``.

    The chain head is never purged, even when it too is older: appends go on
    from the head left in the table, so a purge that emptied it would restart
    the chain at record 1 (the next day's purge takes it, once newer records
    follow it).
    """
    first_young = session.scalar(select(func.min(AuditEvent.seq)).where(AuditEvent.at >= cutoff))
    head = session.scalar(select(func.max(AuditEvent.seq)))
    if head is None:
        return None
    keep = head if first_young is None else min(first_young, head)
    query = select(AuditEvent).where(AuditEvent.at < cutoff, AuditEvent.seq < keep)
    return session.scalar(query.order_by(AuditEvent.seq.desc()).limit(1))


def _purge_through(session: Session, key: MacKey, point: AuditEvent, at: datetime) -> int:
    """Replace records up to ``point`` by a signed ``purge`` checkpoint; the count.

    The checkpoints deleted are the oldest ones, up to the newest that pins a
    purged record: what is left of the checkpoint chain has no gap.
    """
    checkpoint = sign(key, "purge", point, at, _last_checkpoint(session))
    newest_pinning_purged = func.max(AuditCheckpoint.number)
    through = session.scalar(select(newest_pinning_purged).where(AuditCheckpoint.seq <= point.seq))
    if through is not None:
        session.execute(delete(AuditCheckpoint).where(AuditCheckpoint.number <= through))
    purged = session.execute(delete(AuditEvent).where(AuditEvent.seq <= point.seq)).rowcount
    session.add(checkpoint)
    session.flush()
    return purged


def purge_audit(vault: Vault, *, actor: str = "system") -> int:
    """Delete access-log records older than the retention; the number deleted.

    A signed ``purge`` checkpoint of the last deleted record is stored in the
    same transaction. Every run, purging or not, is itself recorded
    (``audit.purge``) and pinned by a ``periodic`` checkpoint.
    """
    key = _checkpoint_key(vault)
    now = vault.clock.now()
    cutoff = now - timedelta(days=vault.settings.retention.audit_retention_days)
    with vault.catalog.session() as session:
        lock_chain(session)
        point = _purge_point(session, cutoff)
        purged = _purge_through(session, key, point, now) if point is not None else 0
        through = point.seq if point is not None else 0
        record = AuditRecord(actor, "audit.purge", detail={"purged": purged, "through": through})
        vault.audit.record(record, session=session)
        _checkpoint_tail(session, vault, key)
    return purged


def _start(session: Session) -> AuditCheckpoint | None:
    query = select(AuditCheckpoint).where(AuditCheckpoint.kind == "purge")
    return session.scalar(query.order_by(AuditCheckpoint.seq.desc()).limit(1))


def _check_checkpoint(
    session: Session, key: MacKey, checkpoint: AuditCheckpoint
) -> ChainBreak | None:
    if not genuine(key, checkpoint):
        return ChainBreak(checkpoint.seq, "checkpoint signature invalid")
    if checkpoint.kind == "purge":
        return None
    event = session.get(AuditEvent, checkpoint.seq)
    if event is None:
        return ChainBreak(checkpoint.seq, "record pinned by a checkpoint is missing")
    if event.hash != checkpoint.hash:
        return ChainBreak(checkpoint.seq, "record differs from its checkpoint")
    return None


def _behind_the_purge(session: Session, floor: int) -> list[ChainBreak]:
    """Records at or before the last purged one: a chain restarted behind the checkpoint.

    The walk starts after the purge checkpoint, so these would go unchecked.
    """
    query = select(func.min(AuditEvent.seq)).where(AuditEvent.seq <= floor)
    first = session.scalar(query)
    if first is None:
        return []
    return [ChainBreak(first, "record numbered at or before the last purged record")]


def _unsigned_announcements(
    session: Session, checkpoints: Sequence[AuditCheckpoint], floor: int
) -> list[ChainBreak]:
    """Records of :data:`CHECKPOINTED_ACTIONS` whose checkpoint is missing.

    Each such record is pinned by a ``periodic`` checkpoint in its own
    transaction. Those before the oldest periodic checkpoint left lost theirs
    to a purge (later checkpoints still pin them, through the chain).
    """
    pinned = {c.seq for c in checkpoints if c.kind == "periodic"}
    since = min(pinned, default=floor + 1)
    query = select(AuditEvent.seq).where(
        AuditEvent.action.in_(CHECKPOINTED_ACTIONS), AuditEvent.seq >= since
    )
    missing = sorted(set(session.scalars(query)) - pinned)
    return [ChainBreak(seq, "the checkpoint this record announces is missing") for seq in missing]


def _checkpoints_in_order(session: Session) -> Sequence[AuditCheckpoint]:
    """Every checkpoint, by number (and pinned record, for unnumbered old ones)."""
    order = (AuditCheckpoint.number, AuditCheckpoint.seq)
    return session.scalars(select(AuditCheckpoint).order_by(*order)).all()


def _first_record(session: Session) -> AuditEvent | None:
    return session.scalar(select(AuditEvent).order_by(AuditEvent.seq).limit(1))


def _checkpoint_breaks(session: Session, vault: Vault, key: MacKey) -> list[ChainBreak]:
    """Every checkpoint's signature, pinned record and link; their announcements."""
    start = _start(session)
    floor = start.seq if start else 0
    checkpoints = _checkpoints_in_order(session)
    pinned = [_check_checkpoint(session, key, c) for c in checkpoints if c.seq >= floor]
    breaks = [b for b in pinned if b is not None]
    breaks += link_breaks(checkpoints)
    breaks += _unsigned_announcements(session, checkpoints, floor)
    breaks += _behind_the_purge(session, floor) if start else []
    return breaks


def checkpoint_gaps(vault: Vault) -> list[ChainBreak]:
    """Where the access log went unsigned for longer than a daily checkpoint allows.

    Not proof of tampering, as :func:`verify_audit`'s breaks are: a vault that
    was stopped leaves the same gap as one whose newest checkpoints were
    removed. ``audit verify`` prints them as warnings for a person to explain.
    """
    with vault.catalog.read_session() as session:
        checkpoints = _checkpoints_in_order(session)
        return list(time_gaps(checkpoints, _first_record(session), vault.clock.now()))


def verify_audit(vault: Vault) -> list[ChainBreak]:
    """Every place where the access log does not hold; empty when intact.

    The chain is checked from the latest ``purge`` checkpoint (or the
    genesis); every checkpoint's signature, pinned record and link to the
    previous checkpoint are checked; every ``audit.checkpoint`` and
    ``audit.purge`` record must have its checkpoint; and a record numbered at
    or before the purge checkpoint is a break. Gaps in time between
    checkpoints are :func:`checkpoint_gaps`' (warnings).
    """
    key = _checkpoint_key(vault)
    with vault.catalog.read_session() as session:
        start = _start(session)
        breaks = _checkpoint_breaks(session, vault, key)
    chain_start = ChainStart(start.seq, start.hash) if start else None
    return breaks + verify_chain(vault.catalog, vault.audit, chain_start)
