"""The storage-commitment table's migration: it matches the model, and comes back out."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from vault.catalog.commitments import CommitmentTransaction
from vault.catalog.db import alembic_config, make_engine, migrate
from vault.catalog.models import Base

TABLE = CommitmentTransaction.__tablename__


def test_migrations_create_exactly_the_commitment_model(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert [d for d in diff if TABLE in repr(d)] == []


def test_the_migration_downgrades_to_its_base(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(engine)
    command.downgrade(alembic_config(engine), "0005c_commitments@-1")
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert TABLE not in tables
    assert "instances" in tables
