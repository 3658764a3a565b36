"""The DPO's pages: requests and the breach register through the real app, and what a
restriction does to the engineers' routes.

The app runs on an embedded vault with a FrozenClock (``auth_world``); the DPO
logs in with a session cookie and posts forms with the CSRF token, as a
browser does.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import pydicom
import pytest
from fastapi.testclient import TestClient

from deidentify.pipeline import StudyDeidentifier
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.page_support import unlabelled_controls
from tests.services.auth_env import AuthWorld, post_form
from tests.services.vault_env import CaseContext, make_case
from vault.admin import assign_case
from vault.catalog.accounts import User
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.dsr import DataSubjectRequest
from vault.catalog.models import Case
from vault.dsr import open_request, verify_identity
from vault.dsr_restriction import lift_restriction, restrict
from vault.dsr_search import SubjectIdentifiers, find_subject_studies
from vault.holds import place_hold

PATIENT = SyntheticPatient()
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
_INLINE_HANDLER = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)


def ingest(case: CaseContext, *, seed: int = 1, n: int = 2) -> tuple[str, dict[str, bytes]]:
    uploaded, study_id = {}, ""
    for ds in make_ct_series(n, rows=16, columns=16, seed=seed, patient=PATIENT):
        data = encode(ds)
        study_id = case.pipeline.ingest(io.BytesIO(data), case.origin).study_id
        uploaded[str(ds.SOPInstanceUID)] = data
    return study_id, uploaded


@pytest.fixture
def dpo(auth_world: AuthWorld) -> TestClient:
    return auth_world.logged_in(auth_world.add_user("dpo@maker.example", "dpo", "Maker"))


@pytest.fixture
def stored(auth_world: AuthWorld) -> tuple[CaseContext, str, dict[str, bytes]]:
    case = make_case(auth_world.vault, "CASE-DPO")
    study_id, uploaded = ingest(case)
    return case, study_id, uploaded


def request_id(world: AuthWorld, reference: str) -> str:
    with world.vault.catalog.read_session() as session:
        return session.query(DataSubjectRequest).filter_by(reference=reference).one().id


def assert_csp_safe(html: str) -> None:
    assert not _INLINE_SCRIPT.search(html)
    assert not _INLINE_HANDLER.search(html)


class TestRequestPages:
    def test_a_request_goes_from_receipt_to_package_through_the_pages(
        self, auth_world: AuthWorld, dpo: TestClient, stored
    ) -> None:
        _, study_id, uploaded = stored
        today = auth_world.clock.now().date().isoformat()
        answer = post_form(
            dpo, "/dpo/requests", {"kind": "access", "received": today, "reference": "DSR-T-1"}
        )
        assert answer.status_code == 303
        page = f"/dpo/requests/{request_id(auth_world, 'DSR-T-1')}"
        assert answer.headers["location"] == page
        search = {"patient_id": PATIENT.patient_id, "issuer": PATIENT.issuer_of_patient_id}
        found = post_form(dpo, f"{page}/search", search)
        assert found.status_code == 200 and study_id in found.text
        refused = post_form(dpo, f"{page}/package", {})
        assert refused.status_code == 409 and "not been verified" in refused.text
        verified = post_form(dpo, f"{page}/verify", {"method": "in-person", "note": "passport"})
        assert verified.status_code == 303
        package = post_form(dpo, f"{page}/package", {})
        assert package.status_code == 200
        assert package.headers["content-type"] == "application/zip"
        archive = zipfile.ZipFile(io.BytesIO(package.content))
        files = {
            str(pydicom.dcmread(io.BytesIO(archive.read(n))).SOPInstanceUID): archive.read(n)
            for n in archive.namelist()
            if n.endswith(".dcm")
        }
        assert files == uploaded
        assert json.loads(archive.read("manifest.json"))["studies"][0]["study_id"] == study_id
        detail = dpo.get(page)
        assert "passport" in detail.text and "export" in detail.text
        viewed = [e for e in auth_world.vault.audit.events() if e.action == "dsr.view"]
        assert [e.object_id for e in viewed] == [page.rsplit("/", 1)[1]]
        assert_csp_safe(detail.text)

    def test_overview_highlights_overdue_requests(self, auth_world: AuthWorld) -> None:
        vault = auth_world.vault
        late = open_request(vault, kind="erasure", received_at=vault.clock.now(), actor="cli")
        auth_world.clock.advance(timedelta(days=40))
        fresh = open_request(vault, kind="access", received_at=vault.clock.now(), actor="cli")
        dpo = auth_world.logged_in(auth_world.add_user("dpo@maker.example", "dpo", "Maker"))
        page = dpo.get("/dpo")
        assert page.status_code == 200
        assert re.search(rf'<tr class="overdue" data-request="{late.reference}"', page.text)
        assert re.search(rf'<tr class="" data-request="{fresh.reference}"', page.text)
        assert_csp_safe(page.text)

    def test_a_refused_form_shows_its_reason(self, auth_world: AuthWorld, dpo: TestClient) -> None:
        tomorrow = (auth_world.clock.now() + timedelta(days=2)).date().isoformat()
        answer = post_form(dpo, "/dpo/requests", {"kind": "access", "received": tomorrow})
        assert answer.status_code == 422
        assert "in the future" in answer.text

    def test_erasure_through_the_page_reports_a_legal_hold(
        self, auth_world: AuthWorld, dpo: TestClient, stored
    ) -> None:
        _, study_id, _ = stored
        place_hold(auth_world.vault, reason_code="DISPUTE-7", placed_by="cli", study_id=study_id)
        request = open_request(
            auth_world.vault, kind="erasure", received_at=auth_world.clock.now(), actor="cli"
        )
        given = SubjectIdentifiers(PATIENT.patient_id, (PATIENT.issuer_of_patient_id,))
        find_subject_studies(auth_world.vault, request.id, given, actor="cli")
        verify_identity(auth_world.vault, request.id, actor="cli", method="signed-letter")
        answer = post_form(dpo, f"/dpo/requests/{request.id}/erase", {})
        assert answer.status_code == 200
        assert "0 studies erased, 1 refused (legal-hold:DISPUTE-7)" in answer.text

    def test_breach_recorded_on_the_page_shows_its_deadlines(
        self, auth_world: AuthWorld, dpo: TestClient
    ) -> None:
        detected = (auth_world.clock.now() - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M")
        form = {
            "detected": detected,
            "nature": "confidentiality",
            "categories": "health-imaging",
            "subjects": "12",
            "records": "",
            "description": "a laptop with an export was stolen",
            "reference": "BR-T-1",
        }
        answer = post_form(dpo, "/dpo/breaches", form)
        assert answer.status_code == 303
        page = dpo.get(answer.headers["location"])
        assert "a laptop with an export was stolen" in page.text
        assert re.search(r'id="investigation"><span class="flag overdue">', page.text)
        assert "h left" in page.text
        assert_csp_safe(page.text)
        overview = dpo.get("/dpo")
        assert re.search(r'class="overdue" data-breach="BR-T-1"', overview.text)

    def test_closing_a_breach_without_its_cause_is_refused_on_the_page_with_the_reason(
        self, auth_world: AuthWorld, dpo: TestClient
    ) -> None:
        now = auth_world.clock.now().strftime("%Y-%m-%dT%H:%M")
        form = {"detected": now, "nature": "availability", "description": "disk failed"}
        page = post_form(dpo, "/dpo/breaches", form).headers["location"]
        for party, exemption in (("authority", "unlikely-risk"), ("subjects", "no-high-risk")):
            refused = post_form(dpo, f"{page}/notify", {"party": party, "exemption": exemption})
            assert refused.status_code == 422 and "reason for the exemption" in refused.text
            form = {"party": party, "exemption": exemption, "reason": "restored from backup"}
            assert post_form(dpo, f"{page}/notify", form).status_code == 303
        assessed = {"consequences": "4 h outage", "measures": "new disk", "lessons": "RAID"}
        assert post_form(dpo, f"{page}/assessment", assessed).status_code == 303
        refused = post_form(dpo, f"{page}/close", {})
        assert refused.status_code == 422
        assert "before closing, record cause" in refused.text
        assert post_form(dpo, f"{page}/assessment", {"cause": "worn disk"}).status_code == 303
        assert post_form(dpo, f"{page}/close", {}).status_code == 303
        closed = dpo.get(page).text
        assert 'id="state">closed' in closed and "worn disk" in closed


def _engineer_with_case(world: AuthWorld) -> tuple[str, CaseContext, str]:
    engineer = world.add_user("eng@maker.example", "engineer", "Maker")
    case = make_case(world.vault, "CASE-ENG")
    with world.vault.catalog.session() as session:
        assign_case(session, session.get(Case, case.case_id), session.get(User, engineer.user_id))
    study_id, _ = ingest(case, seed=9)
    StudyDeidentifier(world.vault).run(study_id)
    return world.token(engineer), case, study_id


class TestRestrictionForEngineers:
    def test_restricted_studies_answer_404_to_engineers_until_lifted(
        self, auth_world: AuthWorld
    ) -> None:
        token, _, study_id = _engineer_with_case(auth_world)
        vault = auth_world.vault
        with vault.catalog.read_session() as session:
            copy = session.query(PseudonymisedStudy).filter_by(study_id=study_id).one()
            instance = (
                session.query(PseudonymisedInstance).filter_by(pseudo_study_id=copy.id).first()
            )
        headers = {"Authorization": f"Bearer {token}"}
        client = auth_world.new_client()
        archive, one = (
            f"/api/engineer/studies/{copy.id}/archive",
            f"/api/engineer/instances/{instance.id}",
        )

        dicomweb = f"/dicomweb/studies/{copy.pseudo_study_uid}/metadata"

        def statuses() -> tuple[int, int, int, bool]:
            listed = client.get("/api/engineer/studies", headers=headers).json()
            return (
                client.get(archive, headers=headers).status_code,
                client.get(one, headers=headers).status_code,
                client.get(dicomweb, headers=headers).status_code,
                any(s["pseudo_study_id"] == copy.id for s in listed),
            )

        assert statuses() == (200, 200, 200, True)
        request = open_request(
            vault, kind="restriction", received_at=vault.clock.now(), actor="cli"
        )
        given = SubjectIdentifiers(PATIENT.patient_id, (PATIENT.issuer_of_patient_id,))
        find_subject_studies(vault, request.id, given, actor="cli")
        verify_identity(vault, request.id, actor="cli", method="in-person")
        objects = set(vault.store.iter_keys())
        assert restrict(vault, request.id, actor="cli") == [study_id]
        assert statuses() == (404, 404, 404, False)
        assert set(vault.store.iter_keys()) == objects
        lift_restriction(vault, request.id, actor="cli")
        assert statuses() == (200, 200, 200, True)


class TestRefusedNewRecordsKeepWhatWasTyped:
    def test_an_incident_without_a_nature_is_refused_on_the_page_with_its_text_kept(
        self, auth_world: AuthWorld, dpo: TestClient
    ) -> None:
        now = auth_world.clock.now().strftime("%Y-%m-%dT%H:%M")
        form = {
            "detected": now,
            "description": "USB stick lost on the train",
            "subjects": "3",
            "reference": "BR-T-9",
        }
        answer = post_form(dpo, "/dpo/breaches", form)
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith("text/html")
        assert 'role="alert">name the nature of the breach' in answer.text
        assert ">USB stick lost on the train</textarea>" in answer.text
        assert 'value="BR-T-9"' in answer.text and 'value="3"' in answer.text

    def test_a_refused_request_keeps_its_kind_and_reference(
        self, auth_world: AuthWorld, dpo: TestClient
    ) -> None:
        tomorrow = (auth_world.clock.now() + timedelta(days=2)).date().isoformat()
        form = {"kind": "erasure", "received": tomorrow, "reference": "DSR-T-9"}
        answer = post_form(dpo, "/dpo/requests", form)
        assert answer.status_code == 422
        assert "<option selected>erasure</option>" in answer.text
        assert 'value="DSR-T-9"' in answer.text and f'value="{tomorrow}"' in answer.text


class TestDpoPageLabels:
    def test_every_control_on_the_dpo_pages_has_a_label(
        self, auth_world: AuthWorld, dpo: TestClient
    ) -> None:
        vault = auth_world.vault
        opened = open_request(vault, kind="rectification", received_at=vault.clock.now(), actor="t")
        now = auth_world.clock.now().strftime("%Y-%m-%dT%H:%M")
        form = {"detected": now, "nature": "availability", "description": "disk failed"}
        incident = post_form(dpo, "/dpo/breaches", form).headers["location"]
        for page in ("/dpo", f"/dpo/requests/{opened.id}", incident):
            assert unlabelled_controls(dpo.get(page).text) == [], page
