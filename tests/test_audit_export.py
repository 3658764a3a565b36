"""Access-log exports: DICOM Audit Messages that validate against the PS3.15 A.5.1
schema shipped in vault/schemas, and FHIR R4 AuditEvents that fhir.resources parses.

Every action the vault records (the mapping table, and every action named in
the sources) is exported in both formats and checked; a real flow (ingest,
refusal, export, hold, checkpoint, purge) is exported through the CLI and
checked for PHI.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from lxml import etree

from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.audit import AuditRecord
from vault.audit_codes import _BY_PREFIX, EVENT_KINDS, event_kind
from vault.audit_export import export_audit, parse_moment
from vault.audit_retention import purge_audit, write_checkpoint
from vault.clock import FrozenClock
from vault.core import Vault
from vault.errors import InvalidInput
from vault.export import export_study
from vault.holds import lift_hold, place_hold
from vault.schemas import DICOM_AUDIT_MESSAGE_RNG

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("dicom-vault")
SCHEMA = etree.RelaxNG(etree.parse(str(DICOM_AUDIT_MESSAGE_RNG)))

# A record for each shape the vault writes: actor kinds (a CLI account with
# its operator), remotes with and without a port, objects with details naming
# other objects, refusals.
CLI_ACTOR = "cli:svc-vault;operator=j.doe@example.eu"
ACTORS = ["user:u1", "token:t1", "pacs:n1", CLI_ACTOR, "system", "anonymous"]
OUTCOMES = ["success", "refused:not-dicom", "failure-password", "storage-unavailable"]
REMOTES = [None, "10.1.2.3", "10.1.2.3:40112", "2001:db8::7", "ws-17.hospital.example"]


def invalid_reason(xml: str) -> str | None:
    """None when ``xml`` validates against the shipped schema; the error otherwise."""
    if SCHEMA.validate(etree.fromstring(xml)):
        return None
    return str(SCHEMA.error_log.last_error)


def exported(vault: Vault, fmt: str, tmp_path: Path, **kwargs: datetime) -> list[str]:
    out = tmp_path / f"export.{fmt}"
    export_audit(vault, fmt, out, actor="cli:auditor", **kwargs)  # type: ignore[arg-type]
    return out.read_text(encoding="utf-8").splitlines()


def record_variety(vault: Vault, action: str) -> None:
    """Records of ``action`` in every outcome, actor and remote shape."""
    for i, outcome in enumerate(OUTCOMES):
        vault.audit.record(
            AuditRecord(
                ACTORS[i % len(ACTORS)],
                action,
                outcome,
                object_type="study",
                object_id=f"{i:032x}",
                remote=REMOTES[i % len(REMOTES)],
                detail={"study": "ab" * 16, "bytes": 10, "tls": True, "note": None},
            )
        )
    vault.audit.record(AuditRecord("anonymous", action, remote=REMOTES[-1]))


ACTION_SHAPE = re.compile(r"^[a-z]+\.[a-z][a-z-]*$")
RECORDING_CALLS = {"_record", "_audit", "_recorder", "AccessRecord"}


def source_actions() -> set[str]:
    """Every action the sources hand to the access log: literals, and ``family.*``
    for an action built by an f-string (``f"dsr.{step}"``)."""
    found: set[str] = set()
    for package in ("vault", "dicom_ingest", "deidentify"):
        for path in (REPO / package).rglob("*.py"):
            found |= _actions_in(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _actions_in(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", "") in {"action", "ACTION"} for t in targets):
                found |= _literals(node.value)
        if isinstance(node, ast.Call):
            found |= _call_actions(node)
    return found


def _call_actions(call: ast.Call) -> set[str]:
    name = getattr(call.func, "id", getattr(call.func, "attr", ""))
    keywords = [k.value for k in call.keywords if k.arg == "action"]
    if name == "AuditRecord":
        return set().union(*(_literals(n) for n in call.args[1:2] + keywords))
    if name in RECORDING_CALLS:
        return {v for n in call.args for v in _literals(n) if ACTION_SHAPE.match(v)}
    return set()


def _literals(node: ast.expr) -> set[str]:
    """String literals in ``node``; an f-string gives its leading ``family.*``."""
    if isinstance(node, ast.JoinedStr):
        head = node.values[0] if node.values else None
        text = head.value if isinstance(head, ast.Constant) else ""
        return {text + "*"} if isinstance(text, str) and text.endswith(".") else set()
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


class TestEveryActionExports:
    def test_every_action_in_the_sources_has_a_meaning_of_its_own(self) -> None:
        actions = source_actions()
        assert {"instance.store", "auth.login", "association", "study.expire"} <= actions
        unmapped = {
            a
            for a in actions
            if a not in EVENT_KINDS and not any(a.startswith(p) for p in _BY_PREFIX)
        }
        assert unmapped == set(), "add these actions to vault.audit_codes.EVENT_KINDS"

    def test_every_action_exports_valid_atna_and_fhir(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        actions = sorted(set(EVENT_KINDS) | {"something.new"})
        for action in actions:
            record_variety(embedded_vault, action)
        atna = exported(embedded_vault, "atna", tmp_path)
        fhir = exported(embedded_vault, "fhir", tmp_path)
        per_action = len(OUTCOMES) + 1
        assert len(atna) == per_action * len(actions)
        invalid = {
            (actions[i // per_action], reason)
            for i, line in enumerate(atna)
            if (reason := invalid_reason(line)) is not None
        }
        assert invalid == set()
        events = [FhirAuditEvent.model_validate_json(line) for line in fhir]
        assert len(events) == len(atna) + 1  # and the first export's own record
        expected = [
            event_kind(action, outcome).event_id.code
            for action in actions
            for outcome in [*OUTCOMES, "success"]
        ]
        assert [e.type.code for e in events[: len(atna)]] == expected

    @pytest.mark.parametrize("outcome", ["open", "closed", "aborted", "refused:unknown-ae"])
    def test_association_events_export_by_outcome(
        self, embedded_vault: Vault, tmp_path: Path, outcome: str
    ) -> None:
        record = AuditRecord(
            "pacs:n1", "association", outcome, "pacs_node", "n1", "10.0.0.9:104", {"tls": True}
        )
        embedded_vault.audit.record(record)
        (line,) = exported(embedded_vault, "atna", tmp_path)
        assert invalid_reason(line) is None
        event_id = etree.fromstring(line).find("EventIdentification/EventID").get("csd-code")
        expected = "110113" if outcome.startswith("refused") else "110108"
        assert event_id == expected


class TestWhatAMessageSays:
    def test_cstore_instance_names_source_destination_and_objects(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        embedded_vault.audit.record(
            AuditRecord(
                "pacs:n1",
                "instance.store",
                object_type="instance",
                object_id="11" * 16,
                remote="192.0.2.5:51000",
                detail={"channel": "cstore", "study": "22" * 16, "bytes": 1234},
            )
        )
        (last,) = list(embedded_vault.audit.events())
        root = etree.fromstring(exported(embedded_vault, "atna", tmp_path)[0])
        event = root.find("EventIdentification")
        assert (event.get("EventActionCode"), event.get("EventOutcomeIndicator")) == ("C", "0")
        assert event.find("EventID").get("csd-code") == "110104"
        sender, vault_node = root.findall("ActiveParticipant")
        assert sender.get("UserID") == "pacs:n1"
        assert sender.get("NetworkAccessPointID") == "192.0.2.5"
        assert sender.find("RoleIDCode").get("csd-code") == "110153"
        assert vault_node.find("RoleIDCode").get("csd-code") == "110152"
        objects = {
            o.find("ParticipantObjectIDTypeCode").get("csd-code"): o
            for o in root.findall("ParticipantObjectIdentification")
        }
        assert objects["instance"].get("ParticipantObjectID") == "11" * 16
        assert objects["instance"].findtext("Encrypted") == "true"
        assert objects["study"].get("ParticipantObjectID") == "22" * 16
        details = {
            d.get("type"): base64.b64decode(d.get("value")).decode()
            for d in objects["audit-record"].findall("ParticipantObjectDetail")
        }
        assert details["hash"] == last.hash
        assert details["bytes"] == "1234"

    def test_refusal_is_a_minor_failure_with_its_reason(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        embedded_vault.audit.record(
            AuditRecord("user:u1", "instance.store", "refused:not-dicom", remote="10.0.0.1")
        )
        root = etree.fromstring(exported(embedded_vault, "atna", tmp_path)[0])
        event = root.find("EventIdentification")
        assert event.get("EventOutcomeIndicator") == "4"
        assert event.findtext("EventOutcomeDescription") == "refused:not-dicom"
        fhir = json.loads(exported(embedded_vault, "fhir", tmp_path)[0])
        assert (fhir["outcome"], fhir["outcomeDesc"]) == ("4", "refused:not-dicom")

    def test_characters_xml_cannot_carry_never_break_the_message(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        embedded_vault.audit.record(
            AuditRecord("user:u1\x01", "case.read", "failure\x1b[31m", "case", "id\x02\x7f")
        )
        (line,) = exported(embedded_vault, "atna", tmp_path)
        assert invalid_reason(line) is None
        participant = etree.fromstring(line).find("ActiveParticipant")
        assert participant.get("UserID") == "user:u1\ufffd"

    def test_fhir_download_says_who_read_what_and_from_where(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        embedded_vault.audit.record(
            AuditRecord(
                "token:t9",
                "study.download",
                object_type="pseudonymised-study",
                object_id="33" * 16,
                remote="198.51.100.4",
                detail={"bytes": 99},
            )
        )
        (line,) = exported(embedded_vault, "fhir", tmp_path)
        event = FhirAuditEvent.model_validate_json(line)
        assert (event.type.code, event.action) == ("110104", "R")
        requestor = next(a for a in event.agent if a.requestor)
        assert requestor.who.identifier.value == "token:t9"
        assert requestor.network.address == "198.51.100.4"
        assert requestor.type.coding[0].code == "110152"  # the reader is the destination
        entity = next(e for e in event.entity if e.what.identifier.value == "33" * 16)
        assert entity.lifecycle.code == "11"  # disclosure


class TestRangeAndRecording:
    def test_since_until_select_records_and_the_export_is_recorded(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        clock = embedded_vault.clock
        assert isinstance(clock, FrozenClock)
        start = clock.now()
        for day in range(3):
            embedded_vault.audit.record(AuditRecord("cli:alice", "case.read", object_id=str(day)))
            clock.advance(timedelta(days=1))
        lines = exported(
            embedded_vault,
            "fhir",
            tmp_path,
            since=start + timedelta(hours=12),
            until=start + timedelta(days=2),
        )
        assert [json.loads(line)["entity"][0]["what"]["identifier"]["value"] for line in lines] == [
            "1"
        ]
        *_, last = embedded_vault.audit.events()
        assert (last.action, json.loads(last.detail)) == (
            "audit.export",
            {"format": "fhir", "records": 1},
        )

    def test_unknown_format_and_empty_range_are_refused(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        with pytest.raises(InvalidInput, match="format"):
            export_audit(embedded_vault, "csv", tmp_path / "x", actor="cli:a")  # type: ignore[arg-type]
        moment = datetime(2026, 1, 1, tzinfo=UTC)
        with pytest.raises(InvalidInput, match="before"):
            export_audit(
                embedded_vault, "atna", tmp_path / "x", since=moment, until=moment, actor="cli:a"
            )
        assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the vault's own

    def test_moments_without_offset_are_utc(self) -> None:
        assert parse_moment("2026-03-01") == datetime(2026, 3, 1, tzinfo=UTC)
        assert parse_moment("2026-03-01T10:00:00+02:00").utcoffset() == timedelta(hours=2)
        with pytest.raises(InvalidInput):
            parse_moment("last tuesday")


def phi_of(datasets: list) -> set[str]:
    values = set()
    for ds in datasets:
        values |= {str(ds.PatientName), str(ds.PatientID)}
        values |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return {v for v in values if len(v) >= 4}


def run_cli(vault: Vault, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(vault.settings.data_dir)}
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


class TestRealFlow:
    def test_a_day_of_work_exports_valid_and_phi_free_through_the_cli(
        self, embedded_case: CaseContext, tmp_path: Path
    ) -> None:
        vault = embedded_case.vault
        datasets = list(make_ct_series(3, rows=16, columns=16, seed=8))
        results = [
            embedded_case.pipeline.ingest(io.BytesIO(encode(ds)), embedded_case.origin)
            for ds in datasets
        ]
        with pytest.raises(InvalidInput):
            embedded_case.pipeline.ingest(io.BytesIO(b"not dicom"), embedded_case.origin)
        study = results[0].study_id
        export_study(vault, study, tmp_path / "copy", actor="cli")
        hold = place_hold(vault, reason_code="DISPUTE-1", placed_by="cli", study_id=study)
        lift_hold(vault, hold.id, lifted_by="cli")
        write_checkpoint(vault)
        purge_audit(vault)
        for fmt in ("atna", "fhir"):
            done = run_cli(vault, "audit", "export", "--format", fmt, "--out", str(tmp_path / fmt))
            assert done.returncode == 0, done.stderr
        atna = (tmp_path / "atna").read_text(encoding="utf-8")
        fhir = (tmp_path / "fhir").read_text(encoding="utf-8")
        actions = {json.loads(line)["subtype"][-1]["code"] for line in fhir.splitlines()}
        assert actions >= {"instance.store", "study.export", "hold.place", "audit.purge"}
        lines = atna.splitlines()
        assert len(lines) >= 9  # 3 stores, a refusal, export, hold and lift, checkpoint, purge
        assert [invalid_reason(line) for line in lines] == [None] * len(lines)
        for line in fhir.splitlines():
            FhirAuditEvent.model_validate_json(line)
        leaked = {v for v in phi_of(datasets) if v in atna or v in fhir}
        assert leaked == set()

    def test_cli_refuses_an_unknown_format_without_writing(
        self, embedded_vault: Vault, tmp_path: Path
    ) -> None:
        out = tmp_path / "log.csv"
        done = run_cli(embedded_vault, "audit", "export", "--format", "csv", "--out", str(out))
        assert done.returncode == 2
        assert "unknown export format" in done.stderr
        assert not out.exists()
