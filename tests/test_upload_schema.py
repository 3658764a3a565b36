"""The upload tables' migrations: they match the models, and carry existing uploads forward."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from vault.catalog.db import make_engine, migrate
from vault.catalog.models import Base

UPLOAD_TABLES = {"uploads", "upload_files", "upload_parts", "upload_instances"}


def _table_of(diff: object) -> str | None:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:] if isinstance(item, tuple) else ():
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None:
            return str(table.name)
        if isinstance(part, str) and part in UPLOAD_TABLES:
            return part
        if name in UPLOAD_TABLES:
            return str(name)
    return None


def test_migrations_create_exactly_the_upload_models(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [d for d in diff if _table_of(d) in UPLOAD_TABLES] == []


def _old_upload(db: Path, upload_id: str, lengths: list[int]) -> None:
    """An upload and its files as the catalog held them before the running total."""
    now = "2026-12-01 10:00:00.000000"
    with sqlite3.connect(db) as connection:  # foreign keys off: no case rows needed
        connection.execute(
            "INSERT INTO uploads (id, case_id, organisation_id, user_id, actor, state,"
            " created_at, updated_at) VALUES (?, 'c', 'o', 'u', 'a', 'open', ?, ?)",
            (upload_id, now, now),
        )
        for number, length in enumerate(lengths):
            connection.execute(
                "INSERT INTO upload_files (id, upload_id, kind, length, offset, state, stored,"
                " duplicates, refused_count, refused, created_at, updated_at)"
                " VALUES (?, ?, 'dicom', ?, 0, 'receiving', 0, 0, 0, '[]', ?, ?)",
                (f"{upload_id}-{number}", upload_id, length, now, now),
            )


def test_existing_uploads_get_their_declared_total_from_their_files(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine, "0005u_uploads")
    _old_upload(db, "busy", [1000, 2500, 7])
    _old_upload(db, "empty", [])
    migrate(engine)
    engine.dispose()
    with sqlite3.connect(db) as connection:
        totals = dict(connection.execute("SELECT id, declared_bytes FROM uploads"))
    assert totals == {"busy": 3507, "empty": 0}
