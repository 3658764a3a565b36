"""The access log's columns hold every object kind the service records, on PostgreSQL too."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.audit import AuditRecord
from vault.audit_retention import verify_audit
from vault.catalog.models import AuditEvent
from vault.clock import FrozenClock
from vault.core import open_vault
from vault.settings import Settings

LONGEST_KINDS = ("pseudonymised-instance", "pseudonymised-study")


@pytest.mark.postgres
def test_the_longest_object_kinds_are_recorded_on_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.catalog.url = postgres_url
    vault = open_vault(settings, clock=FrozenClock())
    try:
        for kind in LONGEST_KINDS:
            vault.audit.record(
                AuditRecord(
                    actor="user:u1",
                    action="instance.read",
                    outcome="success",
                    object_type=kind,
                    object_id="0" * 32,
                )
            )
        with vault.catalog.read_session() as session:
            kinds = {row.object_type for row in session.query(AuditEvent)}
        assert kinds == set(LONGEST_KINDS)
        assert verify_audit(vault) == []
    finally:
        vault.close()
