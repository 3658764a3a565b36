"""A logical dump of the catalog, and loading it back: the body of a catalog backup.

One format for both deployments (SQLite and PostgreSQL), produced through
SQLAlchemy from one consistent snapshot (SQLite: one read transaction of the
WAL; PostgreSQL: one ``REPEATABLE READ`` transaction), streamed so that no
copy of it is ever written to disk in clear. The tables are those found in
the database (reflected, so tables of every feature are included), in
foreign-key order, without ``alembic_version`` (a backup restores only into
a catalog at the same schema revisions, which the manifest names).

JSON lines::

    {"format": "dicom-vault-catalog-dump/1"}
    {"table": "organisations", "columns": ["id", "name", ...]}
    ["3fa9...", "Test Hospital", ...]          one line per row
    ...
    {"end": true, "rows": 1234}

Values other than JSON's null, booleans, numbers and strings are tagged:
``{"$b": base64}`` bytes, ``{"$t": iso}`` datetime, ``{"$d": iso}`` date,
``{"$n": "1.5"}`` decimal, ``{"$j": value}`` a JSON column's value.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, Table, func, select, text

DUMP_FORMAT = "dicom-vault-catalog-dump/1"
SKIPPED_TABLES = frozenset({"alembic_version"})
BATCH_ROWS = 500

Sink = Callable[[bytes], object]


def catalog_tables(connection: Connection) -> list[Table]:
    """The catalog's tables as found in the database, parents before children."""
    metadata = MetaData()
    metadata.reflect(bind=connection)
    return [table for table in metadata.sorted_tables if table.name not in SKIPPED_TABLES]


def schema_revisions(connection: Connection) -> list[str]:
    """The Alembic revisions the catalog is at (one per branch head)."""
    rows = connection.execute(text("SELECT version_num FROM alembic_version"))
    return sorted(str(row[0]) for row in rows)


def snapshot(engine: Engine) -> Connection:
    """A connection in one consistent read-only snapshot of the catalog (caller closes it)."""
    if engine.dialect.name == "postgresql":
        connection = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    else:
        connection = engine.execution_options(catalog_readonly=True).connect()
    connection.begin()
    return connection


def dump(connection: Connection, sink: Sink) -> int:
    """Write every row of every catalog table to ``sink``; the number of rows."""
    sink(_line({"format": DUMP_FORMAT}))
    total = 0
    for table in catalog_tables(connection):
        columns = [column.name for column in table.columns]
        sink(_line({"table": table.name, "columns": columns}))
        ordered = select(table).order_by(*table.primary_key.columns)
        for row in connection.execute(ordered):
            sink(_line([_encode(value) for value in row]))
            total += 1
    sink(_line({"end": True, "rows": total}))
    return total


def is_empty(connection: Connection) -> bool:
    """Whether no catalog table holds a row."""
    for table in catalog_tables(connection):
        if connection.execute(select(func.count()).select_from(table)).scalar():
            return False
    return True


def clear(connection: Connection, *, keep: frozenset[str] = frozenset()) -> None:
    """Delete every row of every catalog table but those named in ``keep``, children first."""
    for table in reversed(catalog_tables(connection)):
        if table.name not in keep:
            connection.execute(table.delete())


def load(
    connection: Connection, lines: Iterable[bytes], *, skip: frozenset[str] = frozenset()
) -> int:
    """Insert the rows of a dump into the (empty) catalog; the number of rows inserted.

    Rows of the tables named in ``skip`` are read (the whole dump is still
    checked) but not inserted.

    Raises:
        ValueError: the dump is malformed, names an unknown table or column,
            or ends early.
    """
    tables = {table.name: table for table in catalog_tables(connection)}
    stream = iter(lines)
    if _json(next(stream, b"")) != {"format": DUMP_FORMAT}:
        raise ValueError("not a catalog dump")
    total = 0
    for table, rows in _blocks(stream, tables):
        if table.name in skip:
            continue
        connection.execute(table.insert(), rows)
        total += len(rows)
    _reset_sequences(connection, list(tables.values()))
    return total


def _blocks(stream: Iterator[bytes], tables: dict[str, Table]) -> Iterator[tuple[Table, list]]:
    """(table, rows as column dicts) batches, until the end line."""
    table: Table | None = None
    columns: list[str] = []
    batch: list[dict[str, Any]] = []
    for raw in stream:
        item = _json(raw)
        if isinstance(item, list):
            if table is None or len(item) != len(columns):
                raise ValueError("a dump row outside a table, or of the wrong width")
            batch.append(dict(zip(columns, (_decode(v) for v in item), strict=True)))
            if len(batch) >= BATCH_ROWS:
                yield table, batch
                batch = []
            continue
        if batch and table is not None:
            yield table, batch
            batch = []
        if item.get("end"):
            return
        table, columns = _table(item, tables)
    raise ValueError("the dump ends early")


def _table(item: dict[str, Any], tables: dict[str, Table]) -> tuple[Table, list[str]]:
    table = tables.get(str(item.get("table")))
    columns = [str(c) for c in item.get("columns", [])]
    if table is None or not set(columns) <= set(table.columns.keys()):
        raise ValueError("the dump names a table or column this catalog does not have")
    return table, columns


def _reset_sequences(connection: Connection, tables: list[Table]) -> None:
    """PostgreSQL: move each serial column's sequence past the restored rows."""
    if connection.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            sequence = connection.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar()
            if sequence:
                highest = connection.execute(select(func.max(column))).scalar() or 0
                connection.execute(
                    text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": highest + 1}
                )


def _line(item: object) -> bytes:
    return json.dumps(item, separators=(",", ":")).encode() + b"\n"


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError("a dump line is not JSON") from exc


def _encode(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, date):
        return {"$d": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$n": str(value)}
    if isinstance(value, dict | list):
        return {"$j": value}
    raise TypeError(f"a catalog value of type {type(value).__name__} cannot be dumped")


def _decode(value: object) -> object:
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError("a dump value is malformed")
    ((tag, payload),) = value.items()
    decoders: dict[str, Callable[[Any], object]] = {
        "$b": lambda p: base64.b64decode(p, validate=True),
        "$t": datetime.fromisoformat,
        "$d": date.fromisoformat,
        "$n": Decimal,
        "$j": lambda p: p,
    }
    if tag not in decoders:
        raise ValueError("a dump value has an unknown tag")
    return decoders[tag](payload)
