"""The access log: append-only, hash-chained records of who did what.

Every record names who (``user:<id>``, ``token:<id>``, ``pacs:<id>``, ``cli``,
``system``), what (an action and an internal object id), when, from where and
the outcome. ``detail`` holds internal identifiers and counts only, never PHI.

Each record's ``hash`` is SHA-256 over the previous record's hash and the
record's canonical JSON, so editing, deleting, inserting or reordering any
record breaks the chain, which :meth:`AuditLog.verify` detects. Appends are
serialised (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from vault._audit_sql import ChainStatements
from vault.catalog.db import Catalog
from vault.catalog.models import AuditEvent
from vault.clock import Clock

GENESIS = "0" * 64
_PG_AUDIT_LOCK = 0x64766175  # an arbitrary constant naming the chain lock

DetailValue = str | int | float | bool | None


@dataclass(frozen=True)
class AuditRecord:
    actor: str
    action: str
    outcome: str = "success"
    object_type: str | None = None
    object_id: str | None = None
    remote: str | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)


HASHED_FIELDS = (  # what the chain hash covers, in this order
    "seq",
    "at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "outcome",
    "remote",
    "detail",
)


def _canonical(values: Mapping[str, object]) -> bytes:
    body = {name: values[name] for name in HASHED_FIELDS}
    body["at"] = values["at"].isoformat()  # type: ignore[attr-defined]
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _hash(prev_hash: str, values: Mapping[str, object]) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(values)).hexdigest()


def chain_hash(prev_hash: str, event: AuditEvent) -> str:
    """The hash ``event`` must carry when it follows a record hashed ``prev_hash``."""
    return _hash(prev_hash, {name: getattr(event, name) for name in HASHED_FIELDS})


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str


@dataclass(frozen=True)
class ChainStart:
    """The last purged record: the chain goes on from its ``seq`` and ``hash``."""

    seq: int
    hash: str


def lock_chain(session: Session) -> None:
    """Serialise chain writers for the rest of ``session``'s transaction.

    PostgreSQL takes an advisory lock; SQLite sessions already hold the write
    lock from ``BEGIN IMMEDIATE``.
    """
    _lock_chain(session.connection())


def _lock_chain(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_PG_LOCK, {"k": _PG_AUDIT_LOCK})


_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


class AuditLog:
    """Appends records to the chain and verifies it."""

    def __init__(self, catalog: Catalog, clock: Clock) -> None:
        self._catalog = catalog
        self._clock = clock
        self._statements: dict[str, ChainStatements] = {}

    def record(self, record: AuditRecord, *, session: Session | None = None) -> None:
        """Append ``record``, inside ``session``'s transaction if one is given."""
        if session is not None:
            self.append(session.connection(), record)
            return
        with self._catalog.session() as own:
            self.append(own.connection(), record)

    def append(self, connection: Connection, record: AuditRecord) -> None:
        """Append ``record`` inside ``connection``'s open transaction.

        The chain head is read and the new record inserted under the chain
        lock, on the connection's own driver cursor (:mod:`vault._audit_sql`),
        so the record commits or rolls back with the caller's other writes.
        """
        _lock_chain(connection)
        statements = self._statements_for(connection)
        last = statements.chain_head(connection)
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        values: dict[str, object] = {
            "seq": seq,
            "at": self._clock.now(),
            "actor": record.actor,
            "action": record.action,
            "outcome": record.outcome,
            "object_type": record.object_type,
            "object_id": record.object_id,
            "remote": record.remote,
            "detail": json.dumps(dict(record.detail), sort_keys=True, separators=(",", ":")),
            "prev_hash": prev,
        }
        values["hash"] = _hash(prev, values)
        statements.insert_record(connection, values)

    def _statements_for(self, connection: Connection) -> ChainStatements:
        name = connection.dialect.name
        statements = self._statements.get(name)
        if statements is None:
            statements = self._statements[name] = ChainStatements.for_dialect(connection.dialect)
        return statements

    def events(self, *, since_seq: int = 0) -> Iterator[AuditEvent]:
        """Records in chain order, streamed from the catalog."""
        with self._catalog.session() as session:
            query = select(AuditEvent).where(AuditEvent.seq > since_seq).order_by(AuditEvent.seq)
            yield from session.scalars(query.execution_options(yield_per=1000))

    def verify(self, *, start: ChainStart | None = None) -> list[ChainBreak]:
        """Every place where the chain does not hold; empty when intact.

        Parameters:
            start: where the chain begins when older records were purged (a
                checkpoint, checked by :mod:`vault.audit_retention`); the
                genesis otherwise.
        """
        breaks: list[ChainBreak] = []
        prev_hash, prev_seq = (start.hash, start.seq) if start else (GENESIS, 0)
        for event in self.events(since_seq=prev_seq):
            breaks.extend(_check(event, prev_seq, prev_hash))
            prev_hash, prev_seq = event.hash, event.seq
        return breaks


def _check(event: AuditEvent, prev_seq: int, prev_hash: str) -> Iterator[ChainBreak]:
    if event.seq != prev_seq + 1:
        yield ChainBreak(event.seq, "gap in sequence")
    if event.prev_hash != prev_hash:
        yield ChainBreak(event.seq, "does not follow the previous record")
    if chain_hash(event.prev_hash, event) != event.hash:
        yield ChainBreak(event.seq, "record altered")
