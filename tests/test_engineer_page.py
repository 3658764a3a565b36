"""The engineer page: assigned cases only, states, thumbnails, downloads, no PHI.

The module's world is the app on its own embedded vault with studies of a
planted-marker synthetic patient, pseudonymised by the real pipeline (Celery
eager): in the engineer's case a finished study (two CT series and a held-back
burned-in capture), one queued, one not yet settled (pending), one whose
de-identification is running (its catalog row set back to ``running`` as a
run in progress leaves it) and one whose every instance was quarantined.
Another engineer's case holds a finished study of its own.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.deidentify_support import burned_in_capture, leaks
from tests.engineer_support import deidentify_settled, ingest, instance_rows, pseudonymise
from tests.services.auth_env import BASE_URL, START, Account, AuthWorld, auth_test_settings
from tests.services.vault_env import CaseContext, make_case
from vault.admin import assign_case
from vault.api.app import create_app
from vault.auth.digests import digest
from vault.catalog.accounts import ApiToken, User
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import AuditEvent, Case
from vault.clock import FrozenClock
from vault.core import Vault
from vault.objects import StoredObject, open_decrypted
from vault.thumbnails import render_thumbnail

PATIENT = SyntheticPatient()


# --- building studies -------------------------------------------------------


def planted_study(seed: int, slices: tuple[int, ...] = (5, 2)) -> list[Dataset]:
    """CT series of one study of the planted-marker patient, 64x64 pixels.

    Each slice carries a bright band at a height of its own, so that the
    thumbnails of two slices differ.
    """
    study_uid = generate_uid()
    datasets = []
    for number, count in enumerate(slices, start=1):
        series = make_ct_series(
            count,
            rows=64,
            columns=64,
            patient=PATIENT,
            seed=seed,
            study_uid=study_uid,
            series_number=number,
            plant_phi=True,
        )
        for index, ds in enumerate(series):
            pixels = ds.pixel_array.copy()
            pixels[8 * index : 8 * index + 6, 8:56] = 3000
            ds.PixelData = pixels.tobytes()
            datasets.append(ds)
    return datasets


def set_study_state(vault: Vault, pseudo_study_id: str, state: str) -> None:
    with vault.catalog.session() as session:
        session.get(PseudonymisedStudy, pseudo_study_id).state = state  # type: ignore[union-attr]


def decrypted(vault: Vault, row: PseudonymisedInstance) -> bytes:
    assert row.object_key and row.key_id and row.sha256 and row.size is not None
    stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size)
    with open_decrypted(vault.store, vault.keyring.data_key(row.key_id), stored) as plaintext:
        return plaintext.read()


def assign_user(vault: Vault, case_id: str, user_id: str) -> None:
    with vault.catalog.session() as session:
        assign_case(session, session.get(Case, case_id), session.get(User, user_id))


def original_uids(datasets: list[Dataset]) -> set[str]:
    return {
        str(uid)
        for ds in datasets
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    }


# --- the world ----------------------------------------------------------------


@dataclass
class World:
    auth: AuthWorld
    case_id: str
    spare_case: CaseContext
    engineer: Account
    other_engineer: Account
    clinician: Account
    admin: Account
    ingested: list[Dataset]
    done: str
    queued: str
    running: str
    all_quarantined: str
    others_study: str

    @property
    def vault(self) -> Vault:
        return self.auth.vault

    def as_user(self, account: Account) -> TestClient:
        client = self.auth.new_client()
        client.cookies.set(self.auth.cookie_name, self.auth.session_cookie(account))
        return client


def _queued(case: CaseContext) -> str:
    study_id = ingest(case, planted_study(seed=3, slices=(1,)))
    with case.vault.catalog.session() as session:
        row = PseudonymisedStudy(study_id=study_id, state="queued")
        session.add(row)
        session.flush()
        return row.id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = auth_test_settings(tmp_path_factory.mktemp("engineer-page") / "data")
    with TestClient(create_app(settings, clock=FrozenClock(START)), base_url=BASE_URL) as client:
        auth = AuthWorld(client, client.app.state.vault.clock)  # type: ignore[attr-defined]
        vault = auth.vault
        case, other_case = make_case(vault, "EP-CASE-1"), make_case(vault, "EP-CASE-2")
        engineer = auth.add_user("eng@maker.example", "engineer", "Maker")
        other = auth.add_user("other-eng@maker.example", "engineer", "Maker")
        assign_user(vault, case.case_id, engineer.user_id)
        assign_user(vault, other_case.case_id, other.user_id)
        spare_case = make_case(vault, "EP-CASE-3")  # for tests that make studies of their own
        assign_user(vault, spare_case.case_id, engineer.user_id)
        datasets = planted_study(seed=1)
        ingested = [*datasets, burned_in_capture(datasets[0])]
        done = pseudonymise(vault, ingest(case, ingested))
        running = pseudonymise(vault, ingest(case, planted_study(seed=4, slices=(2,))))
        set_study_state(vault, running, "running")
        capture_only = burned_in_capture(planted_study(seed=5, slices=(1,))[0])
        ingest(case, planted_study(seed=6, slices=(1,)))  # received, not yet settled
        yield World(
            auth=auth,
            case_id=case.case_id,
            spare_case=spare_case,
            engineer=engineer,
            other_engineer=other,
            clinician=auth.add_user("clin@hospital.example", "clinician", "Test Hospital"),
            admin=auth.add_user("admin@maker.example", "admin", "Maker"),
            ingested=ingested,
            done=done,
            queued=_queued(case),
            running=running,
            all_quarantined=deidentify_settled(vault, ingest(case, [capture_only])).id,
            others_study=pseudonymise(vault, ingest(other_case, planted_study(seed=2))),
        )


def page_of(world: World, account: Account) -> str:
    response = world.as_user(account).get("/engineer")
    assert response.status_code == 200, response.text
    return response.text


def article(html: str, pseudo_study_id: str) -> str:
    """The ``<article>`` of one study in the page."""
    match = re.search(
        rf'<article class="study" id="study-{pseudo_study_id}".*?</article>', html, re.S
    )
    assert match, pseudo_study_id
    return match.group(0)


def series_of(world: World, pseudo_study_id: str) -> dict[str, list[PseudonymisedInstance]]:
    series: dict[str, list[PseudonymisedInstance]] = {}
    for row in instance_rows(world.vault, pseudo_study_id):
        if row.state == "done" and row.pseudo_series_uid:
            series.setdefault(row.pseudo_series_uid, []).append(row)
    return series


def thumbnail_path(pseudo_study_id: str, series_uid: str) -> str:
    return f"/engineer/studies/{pseudo_study_id}/series/{series_uid}/thumbnail.png"


def thumbnail_events(world: World) -> list[AuditEvent]:
    return [event for event in world.vault.audit.events() if event.action == "thumbnail.read"]


# --- the page -------------------------------------------------------------------


class TestPageListsAssignedCases:
    def test_the_engineers_case_shows_its_finished_study_with_series_and_download(
        self, world: World
    ) -> None:
        html = page_of(world, world.engineer)
        assert "EP-CASE-1" in html
        with world.vault.catalog.session() as session:
            pseudonym = session.get(PseudonymisedStudy, world.done).pseudonym  # type: ignore[union-attr]
        done = article(html, world.done)
        assert pseudonym and pseudonym.startswith("PSN-") and pseudonym in done
        assert f'href="/api/engineer/studies/{world.done}/archive"' in done
        series = series_of(world, world.done)
        assert len(series) == 2
        for uid, rows in series.items():
            assert f'src="{thumbnail_path(world.done, uid)}"' in done
            assert f'href="/api/engineer/studies/{world.done}/series/{uid}/archive"' in done
            assert f"CT · {len(rows)} instances" in done
        assert "1 held back" in done

    def test_each_series_download_link_gives_that_series_zip(self, world: World) -> None:
        client = world.as_user(world.engineer)
        html = article(page_of(world, world.engineer), world.done)
        links = re.findall(r'class="download-series" href="([^"]+)"', html)
        expected = {uid: len(rows) for uid, rows in series_of(world, world.done).items()}
        assert len(links) == len(expected) == 2
        for link in links:
            response = client.get(link)
            assert response.status_code == 200
            with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
                series = {
                    str(pydicom.dcmread(archive.open(n)).SeriesInstanceUID)
                    for n in archive.namelist()
                }
                assert len(series) == 1 and expected[series.pop()] == len(archive.namelist())

    def test_another_engineers_case_is_absent_and_theirs_shows_only_it(self, world: World) -> None:
        mine, theirs = page_of(world, world.engineer), page_of(world, world.other_engineer)
        assert "EP-CASE-2" not in mine and world.others_study not in mine
        assert "EP-CASE-2" in theirs and f"study-{world.others_study}" in theirs
        assert "EP-CASE-1" not in theirs and world.done not in theirs

    @pytest.mark.parametrize("role", ["clinician", "admin"])
    def test_clinician_and_admin_are_refused(self, world: World, role: str) -> None:
        client = world.as_user(getattr(world, role))
        assert client.get("/engineer").status_code == 403
        series_uid = next(iter(series_of(world, world.done)))
        assert client.get(thumbnail_path(world.done, series_uid)).status_code == 403

    def test_an_api_token_does_not_open_the_page(self, world: World) -> None:
        headers = {"Authorization": f"Bearer {world.auth.token(world.engineer)}"}
        assert world.auth.new_client().get("/engineer", headers=headers).status_code == 403

    def test_anonymous_visitor_is_sent_to_the_login_page_and_back_after(self, world: World) -> None:
        response = world.auth.new_client().get("/engineer", follow_redirects=False)
        location = response.headers["location"]
        assert (response.status_code, location) == (303, "/login?next=/engineer")

    def test_home_page_links_engineers_to_the_page_and_it_links_to_tokens(
        self, world: World
    ) -> None:
        assert 'href="/engineer"' in world.as_user(world.engineer).get("/").text
        assert 'href="/engineer"' not in world.as_user(world.clinician).get("/").text
        assert 'href="/account/tokens"' in page_of(world, world.engineer)


class TestNoPhiInThePage:
    def test_the_ingested_study_carried_the_planted_markers(self, world: World) -> None:
        planted = b"".join(encode(ds) for ds in world.ingested)
        assert [m for m in PATIENT.markers() if not leaks(planted, [m])] == []

    def test_no_planted_marker_or_original_uid_in_the_html(self, world: World) -> None:
        html = page_of(world, world.engineer)
        assert leaks(html.encode(), PATIENT.markers()) == []
        assert [uid for uid in original_uids(world.ingested) if uid in html] == []


class TestDeidentificationStates:
    def test_case_counts_studies_by_state(self, world: World) -> None:
        html = page_of(world, world.engineer)
        section = re.search(
            rf'<section class="case" id="case-{world.case_id}".*?</section>', html, re.S
        )
        assert section
        counts = dict(
            (state, int(n))
            for state, n in re.findall(r'data-state="(\w+)">(\d+) \w+</span>', section.group(0))
        )
        assert counts == {"pending": 2, "running": 1, "done": 1, "failed": 0, "quarantined": 1}

    @pytest.mark.parametrize("which", ["queued", "running"])
    def test_study_being_deidentified_shows_its_state_and_no_download(
        self, world: World, which: str
    ) -> None:
        pseudo_id = getattr(world, which)
        shown = article(page_of(world, world.engineer), pseudo_id)
        state = "pending" if which == "queued" else "running"
        assert f'data-state="{state}"' in shown
        assert "/archive" not in shown and "<img" not in shown
        assert "once it is done" in shown

    def test_wholly_quarantined_study_says_so_and_offers_nothing(self, world: World) -> None:
        shown = article(page_of(world, world.engineer), world.all_quarantined)
        assert 'data-state="quarantined"' in shown and "all-instances-quarantined" in shown
        assert "/archive" not in shown and "<img" not in shown


# --- thumbnails -------------------------------------------------------------------


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def middle_by_position(world: World, rows: list[PseudonymisedInstance]) -> PseudonymisedInstance:
    """The row whose decrypted file sits in the middle of the series by slice position."""

    def z(row: PseudonymisedInstance) -> float:
        return float(
            pydicom.dcmread(io.BytesIO(decrypted(world.vault, row))).ImagePositionPatient[2]
        )

    return sorted(rows, key=z)[len(rows) // 2]


class TestThumbnails:
    def test_thumbnail_is_the_middle_instance_as_a_privately_cached_png(self, world: World) -> None:
        uid, rows = max(series_of(world, world.done).items(), key=lambda item: len(item[1]))
        assert len(rows) == 5
        response = world.as_user(world.engineer).get(thumbnail_path(world.done, uid))
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == "private, max-age=300"
        image = _png(response.content)
        assert (image.format, image.size) == ("PNG", (64, 64))  # fits 160 px, not enlarged
        assert np.asarray(image).std() > 0
        middle = middle_by_position(world, rows)
        assert response.content == render_thumbnail(io.BytesIO(decrypted(world.vault, middle)))
        others = [render_thumbnail(io.BytesIO(decrypted(world.vault, r))) for r in rows]
        assert others.count(response.content) == 1  # the slices' thumbnails all differ

    def test_no_planted_marker_or_original_uid_in_the_png(self, world: World) -> None:
        client = world.as_user(world.engineer)
        for uid in series_of(world, world.done):
            png = client.get(thumbnail_path(world.done, uid)).content
            assert leaks(png, PATIENT.markers()) == []
            assert [u for u in original_uids(world.ingested) if u.encode() in png] == []
            assert b"tEXt" not in png and b"iTXt" not in png and b"zTXt" not in png

    def test_every_thumbnail_read_is_in_the_access_log_with_its_instance(
        self, world: World
    ) -> None:
        uid, rows = max(series_of(world, world.done).items(), key=lambda item: len(item[1]))
        before = len(thumbnail_events(world))
        world.as_user(world.engineer).get(thumbnail_path(world.done, uid))
        world.as_user(world.other_engineer).get(thumbnail_path(world.done, uid))
        ok, refused = thumbnail_events(world)[before:]
        assert (ok.actor, ok.outcome) == (f"user:{world.engineer.user_id}", "success")
        assert (ok.object_type, ok.object_id) == ("pseudonymised-study", world.done)
        assert middle_by_position(world, rows).id in ok.detail
        assert (refused.actor, refused.outcome) == (
            f"user:{world.other_engineer.user_id}",
            "failure:not-found",
        )

    def test_another_engineers_study_answers_404_like_an_unknown_one(self, world: World) -> None:
        client = world.as_user(world.engineer)
        their_uid = next(iter(series_of(world, world.others_study)))
        mine = next(iter(series_of(world, world.done)))
        assert client.get(thumbnail_path(world.others_study, their_uid)).status_code == 404
        assert client.get(thumbnail_path("0" * 32, mine)).status_code == 404
        assert client.get(thumbnail_path(world.done, "2.25.1")).status_code == 404

    def test_a_study_still_being_deidentified_answers_409_with_its_state(
        self, world: World
    ) -> None:
        uid = next(iter(series_of(world, world.running)))
        response = world.as_user(world.engineer).get(thumbnail_path(world.running, uid))
        assert response.status_code == 409
        assert response.json()["error"] == "not-ready" and "running" in response.json()["detail"]

    def test_a_series_uid_that_is_not_a_uid_is_refused(self, world: World) -> None:
        response = world.as_user(world.engineer).get(thumbnail_path(world.done, "a'b"))
        assert response.status_code == 422


class TestQuarantinedInstancesAreNeverRendered:
    """Rows flipped to ``quarantined`` in a study of their own (fault injection)."""

    @pytest.fixture
    def study(self, world: World) -> str:
        return pseudonymise(
            world.vault, ingest(world.spare_case, planted_study(seed=7, slices=(5,)))
        )

    def _quarantine(self, world: World, rows: list[PseudonymisedInstance]) -> None:
        with world.vault.catalog.session() as session:
            for row in rows:
                session.get(PseudonymisedInstance, row.id).state = "quarantined"  # type: ignore[union-attr]

    def test_the_quarantined_middle_instance_is_passed_over(self, world: World, study: str) -> None:
        ((uid, rows),) = series_of(world, study).items()
        middle = middle_by_position(world, rows)
        self._quarantine(world, [middle])
        before = len(thumbnail_events(world))
        response = world.as_user(world.engineer).get(thumbnail_path(study, uid))
        assert response.status_code == 200
        (event,) = thumbnail_events(world)[before:]
        assert middle.id not in event.detail
        assert any(row.id in event.detail for row in rows if row.id != middle.id)

    def test_a_series_with_only_quarantined_instances_answers_404(
        self, world: World, study: str
    ) -> None:
        ((uid, rows),) = series_of(world, study).items()
        self._quarantine(world, rows)
        assert world.as_user(world.engineer).get(thumbnail_path(study, uid)).status_code == 404


# --- token management -----------------------------------------------------------


class TestTokenManagement:
    def test_tokens_page_shows_expiry_state_and_last_use(self, world: World) -> None:
        used, expired = world.auth.token(world.engineer), world.auth.token(world.engineer)
        world.auth.new_client().get("/api/me", headers={"Authorization": f"Bearer {used}"})
        with world.vault.catalog.session() as session:
            by_hash = select(ApiToken).where(ApiToken.token_hash == digest(expired))
            session.scalars(by_hash).one().expires_at = START - timedelta(days=365)
            used_id = session.scalars(
                select(ApiToken.id).where(ApiToken.token_hash == digest(used))
            ).one()
        html = world.as_user(world.engineer).get("/account/tokens").text
        rows = re.findall(r"<tr>.*?</tr>", html, re.S)
        (used_row,) = [row for row in rows if f"/account/tokens/{used_id}/revoke" in row]
        assert START.date().isoformat() in used_row and ">active<" in used_row
        (expired_row,) = [row for row in rows if ">expired<" in row]
        assert (START - timedelta(days=365)).date().isoformat() in expired_row
        assert "/revoke" not in expired_row  # nothing left to revoke
        assert 'href="/engineer"' in html
