"""Filing a study of the inbox under a case (``dicom-vault case file``).

A PACS push whose case attribute names no open case lands in the inbox of the
sender's organisation: stored and settled, but within no engineer's reach. An
administrator files it under the right case.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ingest.pipeline import IngestOrigin
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.services.vault_env import CaseContext, make_case, without_vault_settings
from vault.admin import create_case, file_study, get_or_create_organisation
from vault.catalog.models import AuditEvent, Case, Study
from vault.core import Vault, open_vault
from vault.errors import PolicyRefused
from vault.settings import Settings

CLI = Path(sys.executable).with_name("dicom-vault")


def _inbox_study(case: CaseContext, seed: int, patient: SyntheticPatient | None = None) -> str:
    """A study stored as the receiver stores an unmatched push: no case."""
    origin = IngestOrigin("cstore", "PACS1", case.origin.organisation_id, None)
    series = make_ct_series(1, rows=16, columns=16, seed=seed, patient=patient)
    return case.pipeline.ingest(io.BytesIO(encode(next(iter(series)))), origin).study_id


def _file(vault: Vault, study_id: str, reference: str) -> None:
    with vault.catalog.session() as session:
        case = session.scalar(select(Case).where(Case.reference == reference))
        assert case is not None
        file_study(session, study_id, case, one_patient_per_case=True)


def _case_of(vault: Vault, study_id: str) -> str | None:
    with vault.catalog.session() as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study.case_id


def test_an_inbox_study_is_filed_under_a_case_of_its_organisation(
    embedded_case: CaseContext,
) -> None:
    study_id = _inbox_study(embedded_case, seed=1)
    assert _case_of(embedded_case.vault, study_id) is None
    _file(embedded_case.vault, study_id, "CASE-0001")
    assert _case_of(embedded_case.vault, study_id) == embedded_case.case_id


def test_a_filed_study_is_not_moved_to_another_case(embedded_case: CaseContext) -> None:
    study_id = _inbox_study(embedded_case, seed=2)
    _file(embedded_case.vault, study_id, "CASE-0001")
    make_case(embedded_case.vault, "CASE-0002")
    with pytest.raises(PolicyRefused, match="already filed"):
        _file(embedded_case.vault, study_id, "CASE-0002")
    assert _case_of(embedded_case.vault, study_id) == embedded_case.case_id


def test_a_case_of_another_organisation_is_refused(embedded_case: CaseContext) -> None:
    study_id = _inbox_study(embedded_case, seed=3)
    with embedded_case.vault.catalog.session() as session:
        other = get_or_create_organisation(session, "Other Hospital")
        create_case(session, "CASE-ELSEWHERE", other)
    with pytest.raises(PolicyRefused, match="another organisation"):
        _file(embedded_case.vault, study_id, "CASE-ELSEWHERE")
    assert _case_of(embedded_case.vault, study_id) is None


def test_another_patient_is_refused_in_a_one_patient_case(embedded_case: CaseContext) -> None:
    filed = embedded_case.pipeline.ingest(
        io.BytesIO(encode(next(iter(make_ct_series(1, rows=16, columns=16, seed=4))))),
        embedded_case.origin,
    )
    assert filed.study_id
    someone_else = SyntheticPatient(family_name="Zorbavic", patient_id="PZB7781234")
    stranger = _inbox_study(embedded_case, seed=5, patient=someone_else)
    with pytest.raises(PolicyRefused, match="another patient"):
        _file(embedded_case.vault, stranger, "CASE-0001")
    assert _case_of(embedded_case.vault, stranger) is None


def test_the_command_files_the_study_and_records_it(tmp_path: Path) -> None:
    data = tmp_path / "var"
    vault = open_vault(Settings(data_dir=data))
    try:
        study_id = _inbox_study(make_case(vault, "CASE-CLI"), seed=6)
    finally:
        vault.close()
    env = without_vault_settings() | {"DICOM_VAULT_DATA_DIR": str(data)}
    argv = [str(CLI), "case", "file", study_id, "--case", "CASE-CLI"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"study {study_id} filed under case CASE-CLI" in done.stdout
    assert again.returncode == 2
    assert again.stderr.strip() == "error: this study is already filed under a case"
    vault = open_vault(Settings(data_dir=data))
    try:
        assert _case_of(vault, study_id) is not None
        with vault.catalog.session() as session:
            events = session.scalars(select(AuditEvent).where(AuditEvent.action == "study.file"))
            assert [(e.object_id, e.outcome) for e in events] == [(study_id, "success")]
    finally:
        vault.close()
