"""Data-subject requests: deadlines, identity check, search, package, rectification,
restriction and erasure, on real catalogs, stores and key providers.

Tests taking ``case`` run on every deployment (filesystem + SQLite, SeaweedFS +
PostgreSQL) with every key provider; the others on the embedded default.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from crypto.errors import KeyDestroyedError
from deidentify.pipeline import StudyDeidentifier
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series, write_series
from tests.services.vault_env import CaseContext, make_case
from vault import dsr
from vault.admin import assign_case, create_user, get_or_create_organisation
from vault.auth.permissions import CaseAction, Principal, can_access_case
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.dsr import DataSubjectRequest, DsrEvent
from vault.catalog.models import Case, DataKeyRecord, Instance, Study
from vault.catalog.retention import Tombstone
from vault.core import Vault
from vault.dsr_erasure import erase
from vault.dsr_package import MANIFEST_NAME, prepare_package, stream_package
from vault.dsr_rectify import rectify
from vault.dsr_restriction import ARRIVAL_ACTOR, lift_restriction, restrict
from vault.dsr_search import SubjectIdentifiers, find_subject_studies
from vault.dsr_views import events_of, list_requests, studies_of
from vault.errors import IdentityNotVerified, InvalidInput, RequestNotOpen
from vault.holds import place_hold
from vault.objects import StoredObject, open_decrypted
from vault.reader import open_instance

ALICE = SyntheticPatient(patient_id="PQX4417093", birth_date="19610314")
BOB = SyntheticPatient(
    family_name="Zephyrson", given_name="Basilio", patient_id="BZX7712055", birth_date="19720809"
)
DPO = "user:dpo-test"
CLI = Path(sys.executable).with_name("dicom-vault")


def ingest(case: CaseContext, patient: SyntheticPatient, *, seed: int, n: int = 2):
    """Ingest a small study of ``patient``; (study id, {sop uid: uploaded bytes})."""
    uploaded, study_id = {}, None
    for ds in make_ct_series(n, rows=16, columns=16, seed=seed, patient=patient):
        data = encode(ds)
        study_id = case.pipeline.ingest(io.BytesIO(data), case.origin).study_id
        uploaded[str(ds.SOPInstanceUID)] = data
    assert study_id is not None
    return study_id, uploaded


def new_request(vault: Vault, kind: str, **kwargs) -> DataSubjectRequest:
    return dsr.open_request(
        vault, kind=kind, received_at=kwargs.pop("received_at", vault.clock.now()), actor=DPO
    )


def found_for(vault: Vault, kind: str, patient: SyntheticPatient, *, verified: bool = True):
    request = new_request(vault, kind)
    given = SubjectIdentifiers(patient.patient_id, (patient.issuer_of_patient_id,))
    find_subject_studies(vault, request.id, given, actor=DPO)
    if verified:
        dsr.verify_identity(vault, request.id, actor=DPO, method="identity-document")
    return request


def package_zip(vault: Vault, ref: str) -> zipfile.ZipFile:
    data = b"".join(stream_package(vault, prepare_package(vault, ref), actor=DPO))
    return zipfile.ZipFile(io.BytesIO(data))


def study_files(archive: zipfile.ZipFile) -> dict[str, bytes]:
    """{SOP instance UID: file bytes} of the package's DICOM members."""
    members = [n for n in archive.namelist() if n.endswith(".dcm")]
    return {
        str(pydicom.dcmread(io.BytesIO(archive.read(n))).SOPInstanceUID): archive.read(n)
        for n in members
    }


def audit_of(vault: Vault, action: str):
    return [e for e in vault.audit.events() if e.action == action]


def catalog_texts(vault: Vault) -> str:
    """Every DSR row's clear-text columns, concatenated (to search for PHI)."""
    with vault.catalog.read_session() as session:
        rows = list(session.scalars(select(DataSubjectRequest)))
        events = list(session.scalars(select(DsrEvent)))
        return " ".join(
            [" ".join(f"{r.reference} {r.subject_digests} {r.kind}" for r in rows)]
            + [f"{e.action} {e.outcome} {e.ground} {e.detail}" for e in events]
        )


@pytest.fixture
def alice_and_bob(embedded_vault: Vault) -> tuple[CaseContext, str, str]:
    case_a = make_case(embedded_vault, "CASE-ALICE")
    case_b = make_case(embedded_vault, "CASE-BOB")
    alice, _ = ingest(case_a, ALICE, seed=1)
    bob, _ = ingest(case_b, BOB, seed=2)
    return case_a, alice, bob


class TestDeadlines:
    def test_request_is_due_one_calendar_month_after_receipt(self, embedded_vault: Vault) -> None:
        received = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
        embedded_vault.clock.advance(received + timedelta(days=1) - embedded_vault.clock.now())
        request = new_request(embedded_vault, "access", received_at=received)
        assert request.due_at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)

    def test_extension_moves_the_deadline_by_up_to_two_months_and_is_recorded(
        self, embedded_vault: Vault
    ) -> None:
        request = new_request(embedded_vault, "access")
        received = request.received_at
        extended = dsr.extend_deadline(
            embedded_vault, request.id, actor=DPO, months=2, reason="complexity", note="many files"
        )
        assert extended.due_at == dsr.add_months(received, 3)
        event = next(e for e in events_of(embedded_vault, extended) if e.action == "extend")
        assert (event.detail["months"], event.detail["reason"], event.note) == (
            2,
            "complexity",
            "many files",
        )
        with pytest.raises(InvalidInput):
            dsr.extend_deadline(
                embedded_vault, request.id, actor=DPO, months=1, reason="complexity"
            )

    def test_extension_after_the_first_month_is_refused(self, embedded_vault: Vault) -> None:
        request = new_request(embedded_vault, "erasure")
        embedded_vault.clock.advance(timedelta(days=32))
        with pytest.raises(InvalidInput, match="within one month"):
            dsr.extend_deadline(
                embedded_vault, request.id, actor=DPO, months=1, reason="complexity"
            )

    def test_open_requests_past_their_deadline_are_flagged_overdue(
        self, embedded_vault: Vault
    ) -> None:
        late = new_request(embedded_vault, "access")
        embedded_vault.clock.advance(timedelta(days=20))
        recent = new_request(embedded_vault, "erasure")
        embedded_vault.clock.advance(timedelta(days=15))
        flags = {view.reference: view.overdue for view in list_requests(embedded_vault)}
        assert flags == {late.reference: True, recent.reference: False}

    def test_closed_requests_leave_the_open_list_with_their_sealed_note(
        self, embedded_vault: Vault
    ) -> None:
        request = new_request(embedded_vault, "objection")
        closed = dsr.close_request(
            embedded_vault, request.id, actor=DPO, outcome="refused", note="compelling grounds"
        )
        assert list_requests(embedded_vault) == []
        assert events_of(embedded_vault, closed)[-1].note == "compelling grounds"
        with pytest.raises(RequestNotOpen):
            dsr.verify_identity(embedded_vault, request.id, actor=DPO, method="in-person")

    def test_receipt_in_the_future_and_unknown_kind_are_refused(
        self, embedded_vault: Vault
    ) -> None:
        tomorrow = embedded_vault.clock.now() + timedelta(days=1)
        with pytest.raises(InvalidInput):
            new_request(embedded_vault, "access", received_at=tomorrow)
        with pytest.raises(InvalidInput):
            new_request(embedded_vault, "gossip")


class TestIdentityVerification:
    def test_nothing_is_handed_over_or_changed_before_identity_is_verified(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        vault = alice_and_bob[0].vault
        for kind, act in (
            ("access", lambda ref: prepare_package(vault, ref)),
            ("rectification", lambda ref: rectify(vault, ref, {"PatientSex": "F"}, actor=DPO)),
            ("restriction", lambda ref: restrict(vault, ref, actor=DPO)),
            ("erasure", lambda ref: erase(vault, ref, actor=DPO)),
        ):
            request = found_for(vault, kind, ALICE, verified=False)
            with pytest.raises(IdentityNotVerified):
                act(request.id)

    def test_verification_records_who_how_and_when(self, embedded_vault: Vault) -> None:
        request = new_request(embedded_vault, "access")
        verified = dsr.verify_identity(
            embedded_vault, request.id, actor=DPO, method="hospital-confirmation", note="by phone"
        )
        assert (verified.verified_by, verified.verification_method, verified.state) == (
            DPO,
            "hospital-confirmation",
            "verified",
        )
        assert verified.verified_at == embedded_vault.clock.now()
        assert audit_of(embedded_vault, "dsr.verify")[0].actor == DPO


class TestSearch:
    def test_only_the_persons_studies_are_matched(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _bob = alice_and_bob
        request = new_request(case.vault, "access")
        given = SubjectIdentifiers(ALICE.patient_id, (ALICE.issuer_of_patient_id,))
        found = find_subject_studies(case.vault, request.id, given, actor=DPO)
        assert (found.matched, found.excluded) == ([alice], 0)

    def test_wrong_issuer_matches_nothing(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        vault = alice_and_bob[0].vault
        request = new_request(vault, "access")
        given = SubjectIdentifiers(ALICE.patient_id, ("ANOTHER-HOSPITAL",))
        assert find_subject_studies(vault, request.id, given, actor=DPO).matched == []

    def test_header_check_leaves_out_another_person_with_the_same_patient_id(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        namesake = replace(BOB, patient_id=ALICE.patient_id, issuer_of_patient_id="")
        other, _ = ingest(make_case(case.vault, "CASE-NAMESAKE"), namesake, seed=3)
        request = new_request(case.vault, "access")
        loose = SubjectIdentifiers(ALICE.patient_id, (ALICE.issuer_of_patient_id,))
        assert sorted(find_subject_studies(case.vault, request.id, loose, actor=DPO).matched) == (
            sorted([alice, other])
        )
        checked = replace(loose, birth_date="1961-03-14", name="Marguerite Quuxleigh")
        request = new_request(case.vault, "access")
        found = find_subject_studies(case.vault, request.id, checked, actor=DPO)
        assert (found.matched, found.excluded) == ([alice], 1)

    def test_identifiers_are_kept_only_as_digests(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        vault = alice_and_bob[0].vault
        request = new_request(vault, "access")
        given = SubjectIdentifiers(
            ALICE.patient_id, (ALICE.issuer_of_patient_id,), name="Quuxleigh", birth_date="19610314"
        )
        find_subject_studies(vault, request.id, given, actor=DPO)
        stored = catalog_texts(vault) + " ".join(e.detail for e in vault.audit.events())
        for value in (ALICE.patient_id, ALICE.issuer_of_patient_id, "Quuxleigh", "19610314"):
            assert value not in stored
        with vault.catalog.read_session() as session:
            digests = json.loads(session.get(DataSubjectRequest, request.id).subject_digests)
            alice_digest = session.scalar(
                select(Study.patient_digest).where(Study.id == alice_and_bob[1])
            )
        assert alice_digest in digests


class TestPackage:
    def test_package_round_trips_bit_identical_with_a_manifest(self, case: CaseContext) -> None:
        study_id, uploaded = ingest(case, ALICE, seed=4, n=3)
        request = found_for(case.vault, "portability", ALICE)
        archive = package_zip(case.vault, request.id)
        assert study_files(archive) == uploaded
        manifest = json.loads(archive.read(MANIFEST_NAME))
        assert manifest["request"]["kind"] == "portability"
        (study,) = manifest["studies"]
        assert study["study_id"] == study_id
        assert study["case_reference"] == "CASE-0001"
        assert study["instance_count"] == 3 and len(study["files"]) == 3
        assert {f["path"] for f in study["files"]} == {
            n for n in archive.namelist() if n.endswith(".dcm")
        }
        assert study["retention_until"] and study["received_at"]
        assert {"series", "pseudonymisation", "restricted", "legal_hold"} <= set(study)
        assert any(e["action"] == "instance.store" for e in manifest["access_log"])

    def test_manifest_holds_pseudonymisation_and_the_accesses_to_the_study(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        StudyDeidentifier(case.vault).run(alice)
        request = found_for(case.vault, "access", ALICE)
        manifest = json.loads(package_zip(case.vault, request.id).read(MANIFEST_NAME))
        (study,) = manifest["studies"]
        assert study["pseudonymisation"]["state"] == "done"
        assert study["pseudonymisation"]["pseudonym"].startswith("PSN-")
        actions = {e["action"] for e in manifest["access_log"]}
        assert {"instance.store", "study.deidentify"} <= actions
        assert all(
            e["actor_kind"] in {"cli", "system", "user", "token", "pacs"}
            for e in manifest["access_log"]
        )

    def test_export_is_recorded_on_the_request_and_per_study(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "access", ALICE)
        package_zip(case.vault, request.id)
        (record,) = audit_of(case.vault, "study.export")
        assert (record.object_id, record.outcome, record.actor) == (alice, "success", DPO)
        assert audit_of(case.vault, "dsr.export")[0].outcome == "success"

    def test_a_request_of_another_kind_gets_no_package(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        vault = alice_and_bob[0].vault
        request = found_for(vault, "erasure", ALICE)
        with pytest.raises(RequestNotOpen):
            prepare_package(vault, request.id)


def old_objects(vault: Vault, study_id: str) -> list[StoredObject]:
    with vault.catalog.read_session() as session:
        rows = session.scalars(select(Instance).where(Instance.study_id == study_id))
        return [StoredObject(r.object_key, r.key_id, r.sha256, r.size) for r in rows]


def read_all(vault: Vault, study_id: str) -> dict[str, pydicom.Dataset]:
    with vault.catalog.read_session() as session:
        ids = list(session.scalars(select(Instance.id).where(Instance.study_id == study_id)))
    found = {}
    for instance_id in ids:
        with open_instance(vault, instance_id) as stream:
            ds = pydicom.dcmread(io.BytesIO(stream.read()))
        found[str(ds.SOPInstanceUID)] = ds
    return found


class TestRectification:
    def test_corrected_attribute_is_stored_and_the_original_is_unreadable(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        study_id, uploaded = ingest(case, ALICE, seed=5)
        before = old_objects(vault, study_id)
        request = found_for(vault, "rectification", ALICE)
        assert rectify(
            vault, request.id, {"PatientBirthDate": "19610315"}, actor=DPO, redo=lambda s: None
        ) == [study_id]
        after = read_all(vault, study_id)
        assert set(after) == set(uploaded)
        for uid, ds in after.items():
            original = pydicom.dcmread(io.BytesIO(uploaded[uid]))
            assert ds.PatientBirthDate == "19610315"
            assert ds.PixelData == original.PixelData
            assert (ds.StudyInstanceUID, ds.PatientName) == (
                original.StudyInstanceUID,
                original.PatientName,
            )
        for stored in before:
            with pytest.raises(KeyDestroyedError):
                vault.keyring.data_key(stored.key_id)
            assert stored.object_key not in set(vault.store.iter_keys())

    def test_pseudonymised_copy_is_remade_from_the_corrected_study(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        vault = case.vault
        StudyDeidentifier(vault).run(alice)
        with vault.catalog.read_session() as session:
            old_copy = session.scalar(
                select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == alice)
            )
            old_rows = list(
                session.scalars(
                    select(PseudonymisedInstance).where(
                        PseudonymisedInstance.pseudo_study_id == old_copy.id
                    )
                )
            )
        request = found_for(vault, "rectification", ALICE)
        rectify(vault, request.id, {"PatientName": "Quuxleigh^Margarete"}, actor=DPO)
        with vault.catalog.read_session() as session:
            new_copy = session.scalar(
                select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == alice)
            )
            old_key = session.get(DataKeyRecord, old_copy.data_key_id)
        assert new_copy.id != old_copy.id and new_copy.state == "done"
        assert new_copy.instance_count == 2
        assert old_key.destroyed_at is not None
        remaining = set(vault.store.iter_keys())
        assert not {row.object_key for row in old_rows} & remaining

    def test_the_change_is_recorded_by_keyword_never_by_value(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "rectification", ALICE)
        rectify(case.vault, request.id, {"PatientName": "Quuxleigh^Margarete"}, actor=DPO)
        (record,) = audit_of(case.vault, "dsr.rectify")
        assert (record.object_type, record.object_id) == ("study", alice)
        assert json.loads(record.detail)["attributes"] == "PatientName"
        assert "Margarete" not in catalog_texts(case.vault) + record.detail

    def test_a_corrected_patient_id_moves_the_catalog_digest(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "rectification", ALICE)
        rectify(case.vault, request.id, {"PatientID": "PQX4417094"}, actor=DPO, redo=lambda s: None)
        search = new_request(case.vault, "access")
        given = SubjectIdentifiers("PQX4417094", (ALICE.issuer_of_patient_id,))
        assert find_subject_studies(case.vault, search.id, given, actor=DPO).matched == [alice]

    @pytest.mark.parametrize(
        "changes",
        [{"StudyInstanceUID": "1.2.3"}, {"PatientBirthDate": "1961-3-15"}, {"PatientSex": "X"}, {}],
    )
    def test_other_attributes_and_bad_values_are_refused(
        self, alice_and_bob: tuple[CaseContext, str, str], changes: dict[str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        before = old_objects(case.vault, alice)
        request = found_for(case.vault, "rectification", ALICE)
        with pytest.raises(InvalidInput):
            rectify(case.vault, request.id, changes, actor=DPO)
        assert old_objects(case.vault, alice) == before


class TestErasure:
    def test_erasure_crypto_shreds_the_persons_studies_only(self, case: CaseContext) -> None:
        vault = case.vault
        alice, _ = ingest(case, ALICE, seed=6)
        bob, _ = ingest(make_case(vault, "CASE-BOB"), BOB, seed=7)
        objects = old_objects(vault, alice)
        request = found_for(vault, "erasure", ALICE)
        outcome = erase(vault, request.id, actor=DPO)
        assert (outcome.erased, outcome.refused) == ([alice], {})
        for stored in objects:
            with pytest.raises(KeyDestroyedError):
                open_decrypted(vault.store, vault.keyring.data_key(stored.key_id), stored)
        assert not {s.object_key for s in objects} & set(vault.store.iter_keys())
        with vault.catalog.read_session() as session:
            tomb = session.scalar(select(Tombstone).where(Tombstone.study_id == alice))
        assert tomb.reason == "erased"
        assert read_all(vault, bob)

    def test_a_legal_hold_refuses_erasure_and_the_ground_is_recorded(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        place_hold(case.vault, reason_code="DISPUTE-2026-014", placed_by=DPO, case_id=case.case_id)
        request = found_for(case.vault, "erasure", ALICE)
        outcome = erase(case.vault, request.id, actor=DPO)
        assert (outcome.erased, outcome.refused) == ([], {alice: "legal-hold:DISPUTE-2026-014"})
        assert read_all(case.vault, alice)
        (event,) = [e for e in events_of(case.vault, request) if e.action == "erase"]
        assert (event.outcome, event.ground) == ("refused", "legal-hold:DISPUTE-2026-014")
        assert json.loads(audit_of(case.vault, "dsr.erase")[0].detail)["ground"] == event.ground

    def test_a_legal_obligation_refuses_erasure(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "erasure", ALICE)
        outcome = erase(case.vault, request.id, actor=DPO, legal_obligation="MDR-ANNEX-XIII")
        assert outcome.refused == {alice: "legal-obligation:MDR-ANNEX-XIII"}
        assert read_all(case.vault, alice)


class TestRestrictionRecords:
    def test_restriction_deletes_nothing_and_lifting_is_recorded(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        objects = set(case.vault.store.iter_keys())
        request = found_for(case.vault, "restriction", ALICE)
        assert restrict(case.vault, request.id, actor=DPO) == [alice]
        assert restrict(case.vault, request.id, actor=DPO) == []
        assert set(case.vault.store.iter_keys()) == objects
        assert read_all(case.vault, alice)
        assert lift_restriction(case.vault, request.id, actor=DPO) == [alice]
        actions = [e.action for e in events_of(case.vault, request)]
        assert actions[-2:] == ["restrict", "lift-restriction"]


def _engineer_on(vault: Vault, *case_ids: str) -> Principal:
    """An engineer assigned to ``case_ids``."""
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Maker")
        engineer = create_user(session, "eng@maker.example", "engineer", organisation)
        for case_id in case_ids:
            assign_case(session, session.get(Case, case_id), engineer)
        return Principal(engineer.id, organisation.id, "engineer", "session")


def _reaches(vault: Vault, engineer: Principal, case_id: str) -> bool:
    with vault.catalog.read_session() as session:
        return can_access_case(engineer, case_id, CaseAction.READ_PSEUDONYMISED, session=session)


class TestRestrictionOfStudiesArrivingLater:
    def test_a_new_study_of_the_person_is_withheld_listed_and_released_with_the_rest(
        self, case: CaseContext
    ) -> None:
        vault = case.vault
        first, _ = ingest(case, ALICE, seed=1)
        request = found_for(vault, "restriction", ALICE)
        assert restrict(vault, request.id, actor=DPO) == [first]
        later_case = make_case(vault, "CASE-LATER")
        engineer = _engineer_on(vault, case.case_id, later_case.case_id)
        assert _reaches(vault, engineer, later_case.case_id)  # empty case: nothing withheld
        later, _ = ingest(later_case, ALICE, seed=3)
        assert not _reaches(vault, engineer, later_case.case_id)
        listed = {s.study_id: s.restricted for s in studies_of(vault, request)}
        assert listed == {first: True, later: True}
        arrival = [e for e in events_of(vault, request) if e.study_id == later]
        assert [(e.actor, e.action, e.detail) for e in arrival] == [
            (ARRIVAL_ACTOR, "restrict", {"on": "arrival"})
        ]
        assert audit_of(vault, "dsr.restrict")[-1].object_id == later
        assert sorted(lift_restriction(vault, request.id, actor=DPO)) == sorted([first, later])
        assert _reaches(vault, engineer, case.case_id)
        assert _reaches(vault, engineer, later_case.case_id)

    def test_another_persons_new_study_stays_within_reach(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "restriction", ALICE)
        restrict(case.vault, request.id, actor=DPO)
        other_case = make_case(case.vault, "CASE-BOB-2")
        engineer = _engineer_on(case.vault, other_case.case_id)
        ingest(other_case, BOB, seed=4)
        assert _reaches(case.vault, engineer, other_case.case_id)
        assert [s.study_id for s in studies_of(case.vault, request)] == [alice]

    def test_a_study_arriving_between_the_search_and_the_restriction_is_restricted(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, alice, _ = alice_and_bob
        request = found_for(case.vault, "restriction", ALICE)
        case.vault.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
        between, _ = ingest(make_case(case.vault, "CASE-BETWEEN"), ALICE, seed=5)
        assert restrict(case.vault, request.id, actor=DPO) == [alice, between]

    def test_a_new_study_after_the_restriction_was_lifted_is_not_restricted(
        self, alice_and_bob: tuple[CaseContext, str, str]
    ) -> None:
        case, _, _ = alice_and_bob
        request = found_for(case.vault, "restriction", ALICE)
        restrict(case.vault, request.id, actor=DPO)
        lift_restriction(case.vault, request.id, actor=DPO)
        later_case = make_case(case.vault, "CASE-AFTER")
        engineer = _engineer_on(case.vault, later_case.case_id)
        ingest(later_case, ALICE, seed=6)
        assert _reaches(case.vault, engineer, later_case.case_id)


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_dsr_commands_take_an_access_request_to_its_package(tmp_path: Path) -> None:
    data, series = tmp_path / "var", tmp_path / "series"
    write_series(series, make_ct_series(2, rows=16, columns=16, seed=11, patient=ALICE))
    new_org = ("--organisation", "H", "--new-organisation")
    assert run_cli(data, "case", "create", "CASE-CLI", *new_org).returncode == 0
    assert run_cli(data, "ingest", str(series), "--case", "CASE-CLI").returncode == 0
    opened = run_cli(data, "dsr", "open", "--kind", "access", "--reference", "DSR-CLI-1")
    assert opened.returncode == 0, opened.stderr
    found = run_cli(
        data,
        "dsr",
        "search",
        "DSR-CLI-1",
        "--patient-id",
        ALICE.patient_id,
        "--issuer",
        ALICE.issuer_of_patient_id,
        "--birth-date",
        ALICE.birth_date,
    )
    assert "matched 1 studies" in found.stdout, found.stderr
    assert "no study matched" not in found.stderr
    wrong_issuer = run_cli(
        data, "dsr", "search", "DSR-CLI-1", "--patient-id", ALICE.patient_id, "--issuer", "HOSP"
    )
    assert "matched 0 studies" in wrong_issuer.stdout
    assert "check the ID and its issuer" in wrong_issuer.stderr
    out = tmp_path / "package.zip"
    refused = run_cli(data, "dsr", "export", "DSR-CLI-1", "--out", str(out))
    assert refused.returncode == 2 and "not been verified" in refused.stderr
    assert not out.exists()
    verified = run_cli(
        data, "dsr", "verify", "DSR-CLI-1", "--method", "identity-document", "--note", "passport"
    )
    assert verified.returncode == 0, verified.stderr
    exported = run_cli(data, "dsr", "export", "DSR-CLI-1", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    uploaded = {p.read_bytes() for p in series.iterdir()}
    with zipfile.ZipFile(out) as archive:
        assert {archive.read(n) for n in archive.namelist() if n.endswith(".dcm")} == uploaded
    assert out.stat().st_mode & 0o077 == 0
    shown = run_cli(data, "dsr", "show", "DSR-CLI-1")
    assert "access  verified" in shown.stdout and "note: passport" in shown.stdout
    assert "export  success" in shown.stdout
