"""PostgreSQL for the test session: a migrated template, a fresh copy per test.

The server is the machine's (127.0.0.1:5432, trust auth) or the one named by
``DICOM_VAULT_TEST_PG`` (a libpq URL of a superuser). The session migrates one
template database once; each test that asks for ``postgres_url`` gets its own
database copied from it (fast), dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.services._require import missing_service
from vault.catalog.db import make_engine, migrate

ADMIN_URL = os.environ.get("DICOM_VAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _sqlalchemy_url(database: str) -> str:
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def _admin() -> psycopg.Connection:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)


def _drop(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """The name of a migrated template database, made once per session."""
    try:
        conn = _admin()
    except psycopg.OperationalError as exc:
        missing_service("PostgreSQL", f"cannot connect ({type(exc).__name__})")
    name = f"dv_template_{secrets.token_hex(4)}"
    with conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    engine = make_engine(_sqlalchemy_url(name))
    migrate(engine)
    engine.dispose()
    yield name
    _drop(name)


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh, migrated database for one test."""
    name = f"dv_test_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(postgres_template)
            )
        )
    yield _sqlalchemy_url(name)
    _drop(name)
