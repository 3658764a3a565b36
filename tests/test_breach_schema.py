"""The breach register's migrations: they match the models, and carry existing incidents forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from vault.catalog.db import make_engine, migrate
from vault.catalog.models import Base

BREACH_TABLES = {"breaches", "breach_entries"}


def _tables_of(diff: object) -> set[str]:
    """The table names a diff entry of :func:`compare_metadata` mentions."""
    items = diff if isinstance(diff, list) else [diff]
    names: set[str] = set()
    for item in items:
        for part in item[1:] if isinstance(item, tuple) else ():
            table = getattr(part, "table", None)
            if table is not None:
                names.add(str(table.name))
            if isinstance(part, str):
                names.add(part)
            elif getattr(part, "name", None):
                names.add(str(part.name))
    return names


def test_migrations_create_exactly_the_breach_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [d for d in diff if _tables_of(d) & BREACH_TABLES] == []


def _old_incident(db: Path, breach_id: str, investigation_entries: list[str]) -> None:
    """An incident and its chronology as the catalog held them before the cause."""
    at = "2026-12-01 10:00:00.000000"
    with sqlite3.connect(db) as connection:  # foreign keys off: no key rows needed
        connection.execute(
            "INSERT INTO breaches (id, reference, state, detected_at, recorded_at, recorded_by,"
            " nature, data_categories, key_id) VALUES (?, ?, 'open', ?, ?, 'cli',"
            " 'confidentiality', '', 'k')",
            (breach_id, f"BR-{breach_id}", at, at),
        )
        for recorded in investigation_entries:
            connection.execute(
                "INSERT INTO breach_entries (breach_id, at, recorded_at, actor, kind,"
                " text_sealed) VALUES (?, ?, ?, 'cli', 'investigation', x'00')",
                (breach_id, at, recorded),
            )


def test_existing_incidents_take_the_investigations_recording_time_from_its_entries(
    tmp_path: Path,
) -> None:
    db = tmp_path / "catalog.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, "0005b_breaches")
    _old_incident(db, "late", ["2026-12-03 09:00:00.000000", "2026-12-04 09:00:00.000000"])
    _old_incident(db, "none", [])
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            "SELECT id, investigation_recorded_at, cause_sealed FROM breaches ORDER BY id"
        )
        found = {row[0]: (str(row[1])[:16] if row[1] else None, row[2]) for row in rows}
    assert found == {"late": ("2026-12-03 09:00", None), "none": (None, None)}
