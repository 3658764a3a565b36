"""The embedded SQLite catalog stays whole while CLI commands run beside ``serve``.

SQLite coordinates processes with POSIX locks, and closing any descriptor of a
file drops every POSIX lock the process holds on it. A second engine opened in
the server process must therefore never open and close the database file, or
the next CLI command to close its last connection deletes the server's WAL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from vault.catalog.db import make_engine

OTHER_PROCESS = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1])
connection.execute("SELECT count(*) FROM t").fetchall()
connection.close()
"""


def test_another_process_closing_leaves_the_servers_wal_after_a_second_engine(
    tmp_path: Path,
) -> None:
    path = tmp_path / "catalog.sqlite3"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("INSERT INTO t VALUES (1)"))
    with engine.connect() as held:  # the server's open connection
        held.execute(text("SELECT count(*) FROM t")).scalar()
        held.commit()  # no transaction left open; the connection stays
        make_engine(url)  # the server opens another engine (a second vault)
        subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], check=True, timeout=60)
        assert Path(f"{path}-wal").exists()
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (2)"))
    engine.dispose()
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1])"
            ".execute('SELECT count(*) FROM t').fetchone()[0])",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert check.stdout.strip() == "2"


def test_a_new_catalog_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "catalog.sqlite3"
    make_engine(f"sqlite:///{path}")
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0
