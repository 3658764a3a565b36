"""Signed checkpoints of the access log, chained to one another, and their checks.

A checkpoint pins one record (its ``seq`` and chain ``hash``) with an HMAC
under the key provider's MAC key for purpose ``audit-checkpoint``; whoever
can write the catalog but not use that key cannot make or alter one. The
message signed::

    dicom-vault-audit-checkpoint/2|<number>|<kind>|<seq>|<hash>|<at>|<prev_mac>

``number`` counts checkpoints (1, 2, ...) and ``prev_mac`` is the MAC of
checkpoint ``number - 1`` (empty for the first): the checkpoints form a
chain of their own, so removing one from the middle leaves a gap in the
numbers and a broken link. Removing the newest ones cannot be seen in the
catalog alone (nothing later names them); time shows it instead, as
checkpoints are written at least daily: :func:`time_gaps` reports a newest
checkpoint older than :data:`MAX_CHECKPOINT_INTERVAL`, and two consecutive
checkpoints further apart than that. A vault that was stopped for that long
leaves the same gap, so gaps are warnings for a person to explain, not
proof of tampering.

Checkpoints written before they were chained have ``prev_mac`` NULL and
were signed over the earlier message, without number or predecessor.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from crypto.keys import MacKey
from vault.audit import ChainBreak
from vault.catalog.models import AuditEvent
from vault.catalog.retention import AuditCheckpoint

# The daily job writes a checkpoint every 24 hours; 12 hours of slack for a
# late run, and less than two intervals, so that one missing daily
# checkpoint always shows.
MAX_CHECKPOINT_INTERVAL = timedelta(hours=36)
_HOURS = int(MAX_CHECKPOINT_INTERVAL.total_seconds() // 3600)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _message(checkpoint: AuditCheckpoint) -> bytes:
    c = checkpoint
    if c.prev_mac is None:  # written before checkpoints were chained
        return f"dicom-vault-audit-checkpoint|{c.kind}|{c.seq}|{c.hash}|{_stamp(c.at)}".encode()
    fields = (c.number, c.kind, c.seq, c.hash, _stamp(c.at), c.prev_mac)
    return ("dicom-vault-audit-checkpoint/2|" + "|".join(str(f) for f in fields)).encode()


def sign(
    key: MacKey, kind: str, event: AuditEvent, at: datetime, previous: AuditCheckpoint | None
) -> AuditCheckpoint:
    """A checkpoint of ``kind`` pinning ``event``, next in the chain after ``previous``."""
    checkpoint = AuditCheckpoint(
        number=previous.number + 1 if previous else 1,
        prev_mac=previous.mac if previous else "",
        kind=kind,
        seq=event.seq,
        hash=event.hash,
        at=at,
        mac_key_id=key.key_id,
    )
    checkpoint.mac = key.mac(_message(checkpoint)).hex()
    return checkpoint


def genuine(key: MacKey, checkpoint: AuditCheckpoint) -> bool:
    """Whether ``checkpoint``'s MAC is the key's over its fields."""
    return hmac.compare_digest(key.mac(_message(checkpoint)).hex(), checkpoint.mac)


def link_breaks(checkpoints: Sequence[AuditCheckpoint]) -> Iterator[ChainBreak]:
    """Checkpoints (in number order) that do not follow the one before them.

    The first is not checked against its predecessor: purges delete the
    oldest checkpoints.
    """
    for before, after in pairwise(checkpoints):
        if after.number != before.number + 1:
            yield ChainBreak(after.seq, "a checkpoint before this record's checkpoint is missing")
        elif after.prev_mac is not None and after.prev_mac != before.mac:
            yield ChainBreak(after.seq, "checkpoint does not follow the previous checkpoint")


def time_gaps(
    checkpoints: Sequence[AuditCheckpoint], first_record: AuditEvent | None, now: datetime
) -> Iterator[ChainBreak]:
    """Checkpoints too far apart, and a newest checkpoint (or record) left unsigned too long.

    Each names the record where the gap shows; the vault was stopped, or
    checkpoints were removed.
    """
    for before, after in pairwise(checkpoints):
        if after.at - before.at > MAX_CHECKPOINT_INTERVAL:
            yield ChainBreak(after.seq, f"no checkpoint for more than {_HOURS} hours before")
    newest = checkpoints[-1] if checkpoints else None
    if newest is not None and now - newest.at > MAX_CHECKPOINT_INTERVAL:
        yield ChainBreak(newest.seq, f"newest checkpoint is more than {_HOURS} hours old")
    if newest is None and first_record and now - first_record.at > MAX_CHECKPOINT_INTERVAL:
        yield ChainBreak(first_record.seq, f"no checkpoint for more than {_HOURS} hours")
