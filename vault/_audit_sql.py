"""The access log's two hot statements, rendered once per dialect and run on the driver.

Every stored instance appends one access-log record, inside the transaction
that catalogues it. Through SQLAlchemy Core the two statements of an append
(read the chain head, insert the record) cost about 190 us of execution
machinery per record on this machine, several times the database's own work,
and that alone made the log cost about 9 % of the ingest rate. Here they are
compiled by SQLAlchemy once per dialect (same SQL, same bind processing of
the ``at`` column as the ORM uses to read it back) and executed on the DBAPI
cursor of the caller's connection, so they stay in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.engine import Dialect

from vault.catalog.models import AuditEvent

COLUMNS = (
    "seq",
    "at",
    "actor",
    "action",
    "outcome",
    "object_type",
    "object_id",
    "remote",
    "detail",
    "prev_hash",
    "hash",
)
_HEAD = select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
_INSERT = insert(AuditEvent.__table__)  # type: ignore[arg-type]


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class ChainStatements:
    """The chain-head query and the record insert, as driver SQL for one dialect."""

    head: str
    insert: str
    order: tuple[str, ...] | None  # parameter order for positional styles; None: named
    bind_at: Callable[[Any], Any]

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> ChainStatements:
        head = _HEAD.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        compiled = _INSERT.compile(dialect=dialect, column_keys=list(COLUMNS))
        order = tuple(compiled.positiontup or ()) if dialect.positional else None
        processor = AuditEvent.__table__.c.at.type.bind_processor(dialect)
        return cls(str(head), compiled.string, order, processor or _same)

    def chain_head(self, connection: Connection) -> tuple[int, str] | None:
        """The last record's (seq, hash), read in ``connection``'s transaction."""
        cursor = connection.connection.cursor()
        try:
            cursor.execute(self.head)
            row = cursor.fetchone()
        finally:
            cursor.close()
        return (int(row[0]), str(row[1])) if row else None

    def insert_record(self, connection: Connection, values: Mapping[str, Any]) -> None:
        """Insert one record (every column of :data:`COLUMNS`) in ``connection``'s transaction."""
        bound = {**values, "at": self.bind_at(values["at"])}
        params: Any = tuple(bound[name] for name in self.order) if self.order else bound
        cursor = connection.connection.cursor()
        try:
            cursor.execute(self.insert, params)
        finally:
            cursor.close()
