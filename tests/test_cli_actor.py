"""Who ran a CLI command, as the access log, the holds, the breach register and
the exports name them: the OS account (``SUDO_USER`` under sudo), and the
operator of a shared account after it, never instead of it."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest
import typer
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from lxml import etree

from dicom_ingest.synthetic import make_ct_series, write_series
from tests.test_audit_export import invalid_reason
from tests.test_cli import DEMO_HOSPITAL, run
from vault.catalog.breaches import Breach
from vault.catalog.retention import LegalHold
from vault.command_support import cli_actor, operator_name, os_account
from vault.core import open_vault
from vault.errors import InvalidInput
from vault.settings import Settings

ME = pwd.getpwuid(os.geteuid()).pw_name


@pytest.fixture(autouse=True)
def no_inherited_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subprocesses inherit os.environ: no SUDO_USER or operator of the test runner's."""
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.delenv("DICOM_VAULT_OPERATOR", raising=False)


def actors(data: Path) -> list[tuple[str, str]]:
    vault = open_vault(Settings(data_dir=data))
    try:
        return [(e.actor, e.action) for e in vault.audit.events()]
    finally:
        vault.close()


def requestor_ids(data: Path, tmp_path: Path, action: str) -> tuple[str, str]:
    """The requestor's ATNA UserID and FHIR agent identifier of ``action``'s record."""
    run(data, "audit", "export", "--format", "atna", "--out", str(tmp_path / "log.xml"))
    run(data, "audit", "export", "--format", "fhir", "--out", str(tmp_path / "log.ndjson"))
    atna_lines = (tmp_path / "log.xml").read_text(encoding="utf-8").splitlines()
    assert [invalid_reason(line) for line in atna_lines] == [None] * len(atna_lines)
    messages = [etree.fromstring(line) for line in atna_lines]
    (message,) = [
        m for m in messages if f'code="{action}"' in etree.tostring(m, encoding="unicode")
    ]
    user_id = message.find("ActiveParticipant[@UserIsRequestor='true']").get("UserID")
    events = [
        FhirAuditEvent.model_validate_json(line)
        for line in (tmp_path / "log.ndjson").read_text(encoding="utf-8").splitlines()
    ]
    (event,) = [e for e in events if e.subtype[-1].code == action]
    (agent,) = [a for a in event.agent if a.requestor]
    return user_id, agent.who.identifier.value


class TestTheOsAccountIsRecorded:
    def test_every_command_records_the_account_that_ran_it(self, tmp_path: Path) -> None:
        data = tmp_path / "var"
        write_series(tmp_path / "cd", make_ct_series(2, rows=16, columns=16, seed=5))
        run(data, "case", "create", "CASE-A1", *DEMO_HOSPITAL)
        run(data, "ingest", str(tmp_path / "cd"), "--case", "CASE-A1")
        run(data, "hold", "place", "--reason", "DISPUTE-1", "--case", "CASE-A1")
        recorded = actors(data)
        assert {actor for actor, _ in recorded} == {f"cli:{ME}"}
        assert {"case.create", "instance.store", "hold.place"} <= {a for _, a in recorded}
        assert f"by=cli:{ME}" in run(data, "hold", "list").stdout
        assert requestor_ids(data, tmp_path, "hold.place") == (f"cli:{ME}", f"cli:{ME}")

    def test_under_sudo_the_invoking_login_is_recorded(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = tmp_path / "var"
        monkeypatch.setenv("SUDO_USER", "alice")
        run(data, "case", "create", "CASE-A2", *DEMO_HOSPITAL)
        placed = run(data, "hold", "place", "--reason", "DISPUTE-2", "--case", "CASE-A2")
        hold_id = placed.stdout.split()[2]
        run(data, "hold", "lift", hold_id)
        assert {actor for actor, _ in actors(data)} == {"cli:alice"}
        vault = open_vault(Settings(data_dir=data))
        with vault.catalog.read_session() as session:
            hold = session.get(LegalHold, hold_id)
            assert hold is not None
            assert (hold.placed_by, hold.lifted_by) == ("cli:alice", "cli:alice")
        vault.close()
        assert requestor_ids(data, tmp_path, "hold.lift") == ("cli:alice", "cli:alice")

    def test_the_breach_register_names_the_account(self, tmp_path: Path) -> None:
        data = tmp_path / "var"
        incident = ("--nature", "integrity", "--description", "a lost disk", "--reference", "BR-1")
        run(data, "breach", "record", *incident)
        vault = open_vault(Settings(data_dir=data))
        with vault.catalog.read_session() as session:
            (breach,) = session.query(Breach).all()
            assert breach.recorded_by == f"cli:{ME}"
        vault.close()


class TestAnOperatorOfASharedAccount:
    def test_the_operator_is_recorded_after_the_account(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = tmp_path / "var"
        run(data, "--operator", "j.doe@example.eu", "case", "create", "CASE-B1", *DEMO_HOSPITAL)
        monkeypatch.setenv("DICOM_VAULT_OPERATOR", "mmuller")
        run(data, "case", "close", "CASE-B1")
        recorded = dict((action, actor) for actor, action in actors(data))
        assert recorded["case.create"] == f"cli:{ME};operator=j.doe@example.eu"
        assert recorded["case.close"] == f"cli:{ME};operator=mmuller"
        monkeypatch.delenv("DICOM_VAULT_OPERATOR")
        expected = f"cli:{ME};operator=mmuller"
        assert requestor_ids(data, tmp_path, "case.close") == (expected, expected)

    @pytest.mark.parametrize(
        "name", ["", " ", "j doe", "j\tdoe", "jdoe\n", "j\x07doe", "a;operator=b", "x" * 33]
    )
    def test_a_name_with_blanks_controls_or_separators_is_refused(self, name: str) -> None:
        with pytest.raises(typer.BadParameter):
            operator_name(name)

    def test_the_command_refuses_it_before_opening_the_vault(self, tmp_path: Path) -> None:
        data = tmp_path / "var"
        for name in ("", "j\x07doe"):
            refused = run(data, "--operator", name, "case", "list", check=False)
            assert refused.returncode == 2
            assert "--operator" in refused.stderr
        assert not (data / "catalog.sqlite3").exists()

    def test_a_bad_name_in_the_environment_is_refused_too(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DICOM_VAULT_OPERATOR", "j doe")
        refused = run(tmp_path / "var", "case", "list", check=False)
        assert refused.returncode == 2
        with pytest.raises(InvalidInput):
            cli_actor()


class TestTheAccountRule:
    def test_sudo_user_comes_first_when_it_is_a_name(self) -> None:
        assert os_account({"SUDO_USER": "alice"}) == "alice"
        assert os_account({"SUDO_USER": "al ice"}) == ME
        assert os_account({"SUDO_USER": ""}) == ME
        assert os_account({}) == ME

    def test_a_uid_without_a_password_entry_is_named_by_number(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_entry(uid: int) -> pwd.struct_passwd:
            raise KeyError(uid)

        monkeypatch.setattr(pwd, "getpwuid", no_entry)
        assert os_account({}) == f"#{os.geteuid()}"
        assert cli_actor({}) == f"cli:#{os.geteuid()}"

    def test_the_longest_actor_fits_the_catalog_columns(self) -> None:
        environ = {"SUDO_USER": "a" * 32, "DICOM_VAULT_OPERATOR": "o" * 32}
        assert len(cli_actor(environ)) <= 80
