"""``dicom-vault`` run in this process on one data directory, and what it recorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from vault.catalog.models import AuditEvent
from vault.cli import app
from vault.core import open_vault
from vault.settings import Settings


class Cli:
    """``dicom-vault`` on one data directory, in this process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {"DICOM_VAULT_DATA_DIR": str(data_dir)}

    def __call__(self, *args: str, stdin: str | None = None, code: int = 0) -> str:
        result = CliRunner().invoke(app, list(args), env=self.env, input=stdin)
        assert result.exit_code == code, result.output
        return result.output

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A catalog session on the same vault, committed on leaving."""
        vault = open_vault(Settings(data_dir=self.data_dir))
        try:
            with vault.catalog.session() as session:
                yield session
        finally:
            vault.close()

    def audited(self, action: str) -> list[AuditEvent]:
        """The access-log records of ``action``, oldest first."""
        return self._records(AuditEvent.action == action)

    def audited_family(self, prefix: str) -> list[AuditEvent]:
        """The access-log records whose action starts with ``prefix``, oldest first."""
        return self._records(AuditEvent.action.startswith(prefix))

    def _records(self, condition: object) -> list[AuditEvent]:
        with self.session() as session:
            query = select(AuditEvent).where(condition).order_by(AuditEvent.seq)  # type: ignore[arg-type]
            return list(session.scalars(query))
