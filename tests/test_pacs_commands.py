"""Managing PACS nodes from the command line: list, disable, enable, update.

Each command runs on the data directory of a running receiver, so its effect
is checked on the next association, not only in the catalog.
"""

from __future__ import annotations

from sqlalchemy import select
from typer.testing import CliRunner

from tests.cstore_support import associate
from tests.services.dicom_peers import Receiver
from vault.catalog.models import AuditEvent
from vault.cli import app

FINGERPRINT = "ab" * 32


def pacs(receiver: Receiver, *args: str) -> tuple[int, str]:
    """Run ``dicom-vault pacs ARGS`` on the receiver's vault: (exit code, output)."""
    env = {"DICOM_VAULT_DATA_DIR": str(receiver.vault.settings.data_dir)}
    result = CliRunner().invoke(app, ["pacs", *args], env=env)
    return result.exit_code, result.output


def admitted(receiver: Receiver, ae_title: str = "PACS1") -> bool:
    assoc = associate(receiver, ae_title)
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


def audited(receiver: Receiver, action: str) -> list[str | None]:
    with receiver.vault.catalog.session() as session:
        query = select(AuditEvent.object_id).where(AuditEvent.action == action)
        return list(session.scalars(query))


class TestPacsCommands:
    def test_list_shows_each_node_with_organisation_state_and_pinned_certificate(
        self, receiver: Receiver
    ) -> None:
        code, _ = pacs(receiver, "add", "CTSCANNER", "--organisation", "Test Hospital",
                       "--cert-sha256", FINGERPRINT)  # fmt: skip
        assert code == 0
        code, output = pacs(receiver, "list")
        assert code == 0
        lines = output.splitlines()
        assert lines[0].startswith("CTSCANNER ")
        assert f"cert={FINGERPRINT[:16]}..." in lines[0]
        assert lines[1].startswith("PACS1 ")
        assert "enabled" in lines[1] and "organisation=Test Hospital" in lines[1]
        assert f"id={receiver.node_id}" in lines[1] and "cert=any" in lines[1]

    def test_a_disabled_node_is_refused_until_enabled_again(self, receiver: Receiver) -> None:
        assert pacs(receiver, "disable", "PACS1") == (0, "PACS node PACS1 disabled\n")
        refused = not admitted(receiver)
        assert "disabled" in pacs(receiver, "list")[1]
        assert pacs(receiver, "enable", "PACS1") == (0, "PACS node PACS1 enabled\n")
        assert refused
        assert admitted(receiver)
        assert audited(receiver, "pacs.disable") == [receiver.node_id]
        assert audited(receiver, "pacs.enable") == [receiver.node_id]

    def test_a_pinned_certificate_is_required_until_cleared(self, receiver: Receiver) -> None:
        code, output = pacs(receiver, "update", "PACS1", "--cert-sha256", FINGERPRINT)
        assert (code, output) == (0, "PACS node PACS1 updated (cert)\n")
        refused_without_it = not admitted(receiver)  # plain TCP: no certificate at all
        code, _ = pacs(receiver, "update", "PACS1", "--clear-cert")
        assert code == 0
        assert refused_without_it
        assert admitted(receiver)
        assert len(audited(receiver, "pacs.update")) == 2

    def test_a_bad_fingerprint_or_unknown_node_changes_nothing_and_says_why(
        self, receiver: Receiver
    ) -> None:
        code, output = pacs(receiver, "update", "PACS1", "--cert-sha256", "not-hex")
        assert code == 2
        assert "64 hex digits" in output
        code, output = pacs(receiver, "disable", "NOSUCHNODE")
        assert code == 2
        assert "no such PACS node" in output
        assert admitted(receiver)
        assert audited(receiver, "pacs.update") == []
