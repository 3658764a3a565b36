"""Walking the access log's hash chain fast: a million records in seconds.

:func:`verify_chain` checks what :meth:`vault.audit.AuditLog.verify` checks
(consecutive sequence numbers, each record following the previous hash, each
hash matching its record) without building ORM objects: rows are read as
plain tuples in large batches, and each record's canonical JSON is written
directly with the ``json`` module's C string encoder, byte for byte what
:func:`vault.audit.chain_hash` hashes.

That equality is checked, not assumed: the first record of every walk is
also hashed by :func:`vault.audit.chain_hash`; if the two encodings ever
disagree (the canonical form changed in :mod:`vault.audit`), the walk falls
back to :meth:`AuditLog.verify`, so a format change can cost speed but never
correctness.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection

from vault.audit import GENESIS, HASHED_FIELDS, AuditLog, ChainBreak, ChainStart, chain_hash
from vault.catalog.db import Catalog

BATCH = 20_000
_NAMES = (*HASHED_FIELDS, "prev_hash", "hash")
_SELECT = f"SELECT {', '.join(_NAMES)} FROM audit_events WHERE seq > {{}} ORDER BY seq"  # noqa: S608
_PARAMETER = {"sqlite": "?", "postgresql": "%s"}

Row = tuple[Any, ...]


def _iso(value: datetime | str) -> str:
    """``at`` as the canonical form has it: the UTC datetime's ``isoformat()``.

    SQLite returns SQLAlchemy's storage text (``YYYY-MM-DD HH:MM:SS.ffffff``,
    UTC), rewritten here without parsing; anything else is parsed.
    """
    if value.__class__ is str and len(value) == 26 and value[10] == " ":  # type: ignore[arg-type]
        fraction = value[19:]
        return f"{value[:10]}T{value[11:19]}{'' if fraction == '.000000' else fraction}+00:00"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        return moment.isoformat() + "+00:00"
    return moment.astimezone(UTC).isoformat()


def digest(row: Row) -> str:
    """The chain hash a raw ``audit_events`` row (``_NAMES`` order) should carry:
    SHA-256 over its ``prev_hash`` and its canonical JSON, written inline."""
    seq, at, actor, action, otype, oid, outcome, remote, detail, prev = row[:10]
    enc = encode_basestring_ascii
    body = (
        f'{prev}{{"action":{enc(action)},"actor":{enc(actor)},"at":"{_iso(at)}",'
        f'"detail":{enc(detail)},"object_id":{"null" if oid is None else enc(oid)},'
        f'"object_type":{"null" if otype is None else enc(otype)},'
        f'"outcome":{enc(outcome)},"remote":{"null" if remote is None else enc(remote)},'
        f'"seq":{seq}}}'
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _agrees_with_audit(row: Row) -> bool:
    """Whether :func:`digest` hashes ``row`` exactly as :func:`chain_hash` does."""
    values = dict(zip(_NAMES, row, strict=True))
    record = SimpleNamespace(**{**values, "at": datetime.fromisoformat(_iso(values["at"]))})
    return chain_hash(row[9], record) == digest(row)  # type: ignore[arg-type]


def _rows(connection: Connection, after: int) -> Iterator[Row]:
    """Raw rows past ``after`` in chain order, in batches (server-side on PostgreSQL)."""
    dialect = connection.dialect.name
    dbapi = connection.connection.dbapi_connection
    if dbapi is None or dialect not in _PARAMETER:
        raise RuntimeError(f"cannot walk the access log on {dialect}")
    streamed = {"name": "audit_verify"} if dialect == "postgresql" else {}
    cursor = dbapi.cursor(**streamed)
    try:
        cursor.execute(_SELECT.format(_PARAMETER[dialect]), (after,))
        while batch := cursor.fetchmany(BATCH):
            yield from batch
    finally:
        cursor.close()


def _walk(rows: Iterator[Row], prev_seq: int, prev_hash: str) -> list[ChainBreak]:
    """The checks of ``AuditLog.verify``, on raw rows."""
    breaks: list[ChainBreak] = []
    for row in rows:
        seq, prev, stored = row[0], row[9], row[10]
        if seq != prev_seq + 1:
            breaks.append(ChainBreak(seq, "gap in sequence"))
        if prev != prev_hash:
            breaks.append(ChainBreak(seq, "does not follow the previous record"))
        if digest(row) != stored:
            breaks.append(ChainBreak(seq, "record altered"))
        prev_seq, prev_hash = seq, stored
    return breaks


def verify_chain(catalog: Catalog, log: AuditLog, start: ChainStart | None) -> list[ChainBreak]:
    """Every place where the chain does not hold from ``start`` (or the genesis) on."""
    prev_hash, prev_seq = (start.hash, start.seq) if start else (GENESIS, 0)
    with catalog.read_session() as session:
        rows = _rows(session.connection(), prev_seq)
        first = next(rows, None)
        if first is None:
            return []
        if not _agrees_with_audit(first):
            return log.verify(start=start)
        return _walk(_prepend(first, rows), prev_seq, prev_hash)


def _prepend(first: Row, rows: Iterator[Row]) -> Iterator[Row]:
    yield first
    yield from rows
