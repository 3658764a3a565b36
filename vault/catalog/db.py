"""Connecting to the catalog and bringing its schema up to date.

:func:`open_catalog` returns a :class:`Catalog`: an engine and a session
factory. The schema is managed by Alembic only (``migrate``); nothing calls
``create_all``. SQLite gets WAL, foreign keys and a busy timeout so that the
API, the C-STORE receiver and workers can share one embedded file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


@dataclass(frozen=True)
class Catalog:
    engine: Engine
    sessions: sessionmaker[Session]
    readers: sessionmaker[Session]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: on SQLite it does not take the write lock."""
        with self.readers.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # In WAL mode NORMAL makes a commit durable only at the next checkpoint: a
    # power cut could forget an instance its sender was told was stored.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    """Take SQLite's write lock at BEGIN, so that concurrent writers queue on
    ``busy_timeout`` instead of failing when a read lock cannot be upgraded,
    and so that a read-then-append (the audit chain) cannot interleave.
    Read-only sessions (``Catalog.read_session``) begin deferred instead."""
    if connection.get_execution_options().get("catalog_readonly"):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``; SQLite files get their directory made (mode 0700)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(path)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _create_private(path: Path) -> None:
    """Create the database file with mode 0600 if it does not exist yet (SQLite
    gives its -wal and -shm files the database file's mode).

    An existing file is never opened here: closing any descriptor of a file
    drops every POSIX lock this process holds on it, SQLite's included. A
    ``serve`` process that opened a second engine that way held no lock any
    more, and a CLI command closing its last connection then took itself for
    the last user, checkpointed and deleted the WAL the server was writing to.
    """
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Upgrade the catalog schema to ``revision`` (every branch head by default:
    features add their tables on branches of their own, merged later)."""
    command.upgrade(alembic_config(engine), revision)


def open_catalog(url: str, *, echo: bool = False, upgrade: bool = True) -> Catalog:
    """Connect to the catalog at ``url``, migrating it first unless told not to."""
    engine = make_engine(url, echo=echo)
    if upgrade:
        migrate(engine)
    reader = engine.execution_options(catalog_readonly=True)
    return Catalog(
        engine=engine,
        sessions=sessionmaker(engine, expire_on_commit=False),
        readers=sessionmaker(reader, expire_on_commit=False),
    )


def insert_or_ignore(table: Table, dialect: str, *keys: str) -> Insert:
    """An INSERT into ``table`` that skips rows whose ``keys`` are already there,
    for the catalog's ``dialect`` (``sqlite`` or ``postgresql``)."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(keys))
