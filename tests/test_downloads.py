"""The engineers' download API: listings, study ZIPs, single instances, refusals, audit.

Studies are small synthetic CT studies ingested into the app's own embedded
vault and pseudonymised by the real pipeline (Celery eager). The module's
world holds one finished study (two series and a held-back burned-in capture)
in a case assigned to one engineer, and a queued study in the same case.
Tests that tamper with stored objects make studies of their own; the
aborted-transfer test runs the app under a real uvicorn server so that the
client sees what a client sees.
"""

from __future__ import annotations

import hashlib
import io
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pydicom
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from deidentify.tasks import create_celery_app, register_deidentification
from dicom_ingest import IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.deidentify_support import burned_in_capture
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
from vault.downloads import ArchiveMember, archive_size, stream_archive
from vault.objects import StoredObject
from vault.settle import StudySettledHooks, settle_study

SERVER_WAIT_SECONDS = 30  # a hang guard only: nothing asserts on time


# --- building studies -------------------------------------------------------


def two_series(seed: int, *, slices: tuple[int, int] = (3, 2), size: int = 64) -> list[Dataset]:
    patient = SyntheticPatient()
    study_uid = generate_uid()
    first, second = (
        list(
            make_ct_series(
                count,
                rows=size,
                columns=size,
                patient=patient,
                seed=seed,
                study_uid=study_uid,
                series_number=number,
                plant_phi=True,
            )
        )
        for number, count in enumerate(slices, start=1)
    )
    return first + second


def ingest(case: CaseContext, datasets: list[Dataset]) -> str:
    """Ingest ``datasets`` (Secondary Capture allowed) into ``case``; the study's id."""
    policy = ValidationPolicy.from_settings(case.vault.settings.policy)
    sop_classes = policy.sop_classes | {SecondaryCaptureImageStorage}
    pipeline = IngestPipeline(case.vault, ValidationPolicy(sop_classes, policy.transfer_syntaxes))
    ids = {pipeline.ingest(io.BytesIO(encode(ds)), case.origin).study_id for ds in datasets}
    (study_id,) = ids
    return study_id


def pseudonymise(vault: Vault, study_id: str) -> str:
    """Settle ``study_id`` and de-identify it eagerly; the pseudonymised study's id."""
    hooks = StudySettledHooks()
    register_deidentification(hooks, create_celery_app(vault.settings, vault=vault))
    settle_study(vault, study_id, hooks)
    with vault.catalog.session() as session:
        study = session.scalar(
            select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
        )
        assert study is not None and study.state == "done"
        return study.id


def instance_rows(vault: Vault, pseudo_study_id: str) -> list[PseudonymisedInstance]:
    with vault.catalog.session() as session:
        query = select(PseudonymisedInstance).where(
            PseudonymisedInstance.pseudo_study_id == pseudo_study_id
        )
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def in_archive_order(rows: list[PseudonymisedInstance]) -> list[PseudonymisedInstance]:
    return sorted(rows, key=lambda row: (row.pseudo_series_uid or "", row.pseudo_sop_uid or ""))


def tamper(vault: Vault, row: PseudonymisedInstance) -> None:
    """Flip one ciphertext byte in the middle of ``row``'s stored object."""
    assert row.object_key is not None
    with vault.store.open_reader(row.object_key) as reader:
        data = bytearray(reader.read())
    data[len(data) // 2] ^= 0x01
    with vault.store.open_writer(row.object_key) as writer:
        writer.write(bytes(data))


# --- the world ----------------------------------------------------------------


@dataclass
class World:
    auth: AuthWorld
    client: TestClient
    case: CaseContext
    engineer: Account
    other_engineer: Account
    clinician: Account
    admin: Account
    token: str
    token_id: str
    study: str
    queued: str

    @property
    def vault(self) -> Vault:
        return self.auth.vault

    def bearer(self, secret: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret or self.token}"}

    def as_user(self, account: Account) -> TestClient:
        client = self.auth.new_client()
        client.cookies.set(self.auth.cookie_name, self.auth.session_cookie(account))
        return client


def _token_id(vault: Vault, secret: str) -> str:
    with vault.catalog.session() as session:
        return session.scalars(
            select(ApiToken.id).where(ApiToken.token_hash == digest(secret))
        ).one()


def _assign(vault: Vault, case_id: str, account: Account) -> None:
    with vault.catalog.session() as session:
        assign_case(session, session.get(Case, case_id), session.get(User, account.user_id))


def _queued_study(case: CaseContext) -> str:
    """A study ingested and waiting for de-identification (queued, nothing made yet)."""
    study_id = ingest(case, two_series(seed=3, slices=(1, 1)))
    with case.vault.catalog.session() as session:
        queued = PseudonymisedStudy(study_id=study_id, state="queued")
        session.add(queued)
        session.flush()
        return queued.id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = auth_test_settings(tmp_path_factory.mktemp("downloads") / "data")
    with TestClient(create_app(settings, clock=FrozenClock(START)), base_url=BASE_URL) as client:
        auth = AuthWorld(client, client.app.state.vault.clock)  # type: ignore[attr-defined]
        case = make_case(auth.vault, "DL-CASE-1")
        other_case = make_case(auth.vault, "DL-CASE-2")
        engineer = auth.add_user("eng@maker.example", "engineer", "Maker")
        other = auth.add_user("other-eng@maker.example", "engineer", "Maker")
        _assign(auth.vault, case.case_id, engineer)
        _assign(auth.vault, other_case.case_id, other)
        datasets = two_series(seed=1)
        study_id = ingest(case, [*datasets, burned_in_capture(datasets[0])])
        token = auth.token(engineer)
        yield World(
            auth=auth,
            client=auth.new_client(),
            case=case,
            engineer=engineer,
            other_engineer=other,
            clinician=auth.add_user("clin@hospital.example", "clinician", "Test Hospital"),
            admin=auth.add_user("admin@maker.example", "admin", "Maker"),
            token=token,
            token_id=_token_id(auth.vault, token),
            study=pseudonymise(auth.vault, study_id),
            queued=_queued_study(case),
        )


def archive_of(world: World, pseudo_study_id: str) -> httpx.Response:
    return world.client.get(
        f"/api/engineer/studies/{pseudo_study_id}/archive", headers=world.bearer()
    )


def events(vault: Vault, action: str) -> list[AuditEvent]:
    return [event for event in vault.audit.events() if event.action == action]


def instance_bytes(world: World, pseudo_instance_id: str) -> bytes:
    response = world.client.get(
        f"/api/engineer/instances/{pseudo_instance_id}", headers=world.bearer()
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    return response.content


@contextmanager
def serving(world: World) -> Iterator[str]:
    """The app on the world's data, under a real uvicorn server on a free port."""
    app = create_app(world.vault.settings, clock=FrozenClock(START))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_WAIT_SECONDS
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            pytest.fail("the test server did not start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(SERVER_WAIT_SECONDS)
        sock.close()


# --- the tests ----------------------------------------------------------------


class TestStudyListing:
    def test_lists_the_callers_studies_with_series_and_counts(self, world: World) -> None:
        response = world.client.get("/api/engineer/studies", headers=world.bearer())
        assert response.status_code == 200
        listed = {study["pseudo_study_id"]: study for study in response.json()}
        done, queued = listed[world.study], listed[world.queued]
        assert done["case_reference"] == "DL-CASE-1"
        assert done["pseudonym"].startswith("PSN-")
        assert (done["state"], done["instance_count"], done["quarantined_count"]) == ("done", 5, 1)
        assert sorted(s["instance_count"] for s in done["series"]) == [2, 3]
        assert all(s["pseudo_series_uid"].startswith("2.25.") for s in done["series"])
        assert (queued["state"], queued["series"]) == ("queued", [])

    def test_another_engineer_lists_none_of_this_case(self, world: World) -> None:
        client = world.as_user(world.other_engineer)
        response = client.get("/api/engineer/studies")
        assert response.status_code == 200
        assert response.json() == []


class TestStudyArchive:
    def test_every_member_reads_with_pydicom_and_equals_the_instance_download(
        self, world: World
    ) -> None:
        response = archive_of(world, world.study)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        rows = [row for row in instance_rows(world.vault, world.study) if row.state == "done"]
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            assert archive.testzip() is None
            members = {info.filename: archive.read(info) for info in archive.infolist()}
        assert len(members) == len(rows) == 5
        for row in rows:
            data = members[f"{row.pseudo_series_uid}/{row.pseudo_sop_uid}.dcm"]
            assert data == instance_bytes(world, row.id)
            dataset = pydicom.dcmread(io.BytesIO(data))
            assert dataset.SOPInstanceUID == row.pseudo_sop_uid
            assert dataset.SeriesInstanceUID == row.pseudo_series_uid

    def test_quarantined_instance_is_neither_zipped_nor_served(self, world: World) -> None:
        (held,) = [r for r in instance_rows(world.vault, world.study) if r.state == "quarantined"]
        response = archive_of(world, world.study)
        with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
            names = archive.namelist()
        assert len(names) == 5
        assert not any(held.source_instance_id in name for name in names)
        single = world.client.get(f"/api/engineer/instances/{held.id}", headers=world.bearer())
        assert single.status_code == 404

    def test_archive_is_deterministic_with_a_stable_etag_and_exact_length(
        self, world: World
    ) -> None:
        first, second = archive_of(world, world.study), archive_of(world, world.study)
        assert first.content == second.content
        assert first.headers["etag"] == second.headers["etag"]
        assert int(first.headers["content-length"]) == len(first.content)

    def test_members_are_stored_uncompressed(self, world: World) -> None:
        with zipfile.ZipFile(io.BytesIO(archive_of(world, world.study).content)) as archive:
            assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


class TestArchiveSizePrediction:
    @pytest.mark.parametrize(
        "sizes",
        [(), (0,), (1,), (5000, 1, 70_000), (300_000, 300_000, 300_000)],
        ids=["empty", "one-empty-member", "one-byte", "mixed", "spans-chunks"],
    )
    def test_predicted_size_equals_the_written_archive(self, sizes: tuple[int, ...]) -> None:
        payloads = {f"{i}.{'9' * i}": bytes([i % 251]) * size for i, size in enumerate(sizes)}
        members = [
            ArchiveMember(
                f"2.25.{name}/1.{name}.dcm",
                StoredObject(name, "k", hashlib.sha256(data).hexdigest(), len(data)),
            )
            for name, data in payloads.items()
        ]
        pieces = list(
            stream_archive(members, lambda s: io.BytesIO(payloads[s.object_key]), chunk=65_536)
        )
        written = b"".join(pieces)
        assert archive_size(members) == len(written)
        with zipfile.ZipFile(io.BytesIO(written)) as archive:
            assert [archive.read(m.name) for m in members] == list(payloads.values())


class TestRefusals:
    @pytest.mark.parametrize("route", ["archive", "instance"])
    def test_another_engineers_case_answers_404(self, world: World, route: str) -> None:
        client = world.as_user(world.other_engineer)
        row = instance_rows(world.vault, world.study)[0]
        path = {
            "archive": f"/api/engineer/studies/{world.study}/archive",
            "instance": f"/api/engineer/instances/{row.id}",
        }[route]
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not-found"

    def test_token_bound_to_another_case_answers_404(self, world: World) -> None:
        other = make_case(world.vault, "DL-CASE-3")
        _assign(world.vault, other.case_id, world.engineer)
        secret = world.auth.token(world.engineer, case_id=other.case_id)
        response = world.client.get(
            f"/api/engineer/studies/{world.study}/archive", headers=world.bearer(secret)
        )
        assert response.status_code == 404

    def test_unknown_study_answers_404(self, world: World) -> None:
        assert archive_of(world, "0" * 32).status_code == 404

    def test_unfinished_study_answers_409_with_its_state(self, world: World) -> None:
        response = archive_of(world, world.queued)
        assert response.status_code == 409
        assert response.json()["error"] == "not-ready"
        assert "queued" in response.json()["detail"]

    @pytest.mark.parametrize("role", ["clinician", "admin"])
    def test_clinician_and_admin_cannot_use_the_routes(self, world: World, role: str) -> None:
        client = world.as_user(getattr(world, role))
        row = instance_rows(world.vault, world.study)[0]
        for path in (
            "/api/engineer/studies",
            f"/api/engineer/studies/{world.study}/archive",
            f"/api/engineer/instances/{row.id}",
        ):
            assert client.get(path).status_code == 403, path


class TestTamperedObjects:
    def test_tampered_instance_answers_an_error_never_its_bytes(self, world: World) -> None:
        study = pseudonymise(world.vault, ingest(world.case, two_series(seed=11, slices=(1, 1))))
        row = instance_rows(world.vault, study)[0]
        tamper(world.vault, row)
        response = world.client.get(f"/api/engineer/instances/{row.id}", headers=world.bearer())
        assert response.status_code == 500
        assert response.json()["error"] == "integrity"

    def test_tampered_first_member_answers_an_error_before_any_data(self, world: World) -> None:
        study = pseudonymise(world.vault, ingest(world.case, two_series(seed=12, slices=(1, 1))))
        rows = sorted(
            instance_rows(world.vault, study), key=lambda r: (r.pseudo_series_uid, r.pseudo_sop_uid)
        )
        tamper(world.vault, rows[0])
        response = archive_of(world, study)
        assert response.status_code == 500
        assert response.json()["error"] == "integrity"

    def test_tampered_member_mid_stream_aborts_the_transfer(self, world: World) -> None:
        datasets = two_series(seed=13, slices=(3, 1), size=512)  # over one 1 MiB chunk
        study = pseudonymise(world.vault, ingest(world.case, datasets))
        rows = sorted(
            instance_rows(world.vault, study), key=lambda r: (r.pseudo_series_uid, r.pseudo_sop_uid)
        )
        tamper(world.vault, rows[-1])
        received = bytearray()
        with serving(world) as base_url, httpx.Client(base_url=base_url) as client:
            path = f"/api/engineer/studies/{study}/archive"
            with client.stream("GET", path, headers=world.bearer()) as response:
                assert response.status_code == 200
                expected = int(response.headers["content-length"])
                with pytest.raises(httpx.RemoteProtocolError):
                    for piece in response.iter_raw():
                        received += piece
        assert 0 < len(received) < expected
        (event,) = [e for e in events(world.vault, "study.download") if e.object_id == study]
        assert event.outcome == "failure:integrity"
        assert event.remote == "127.0.0.1"


class TestAccessLog:
    def test_archive_download_is_recorded_for_the_token(self, world: World) -> None:
        before = {e.seq for e in events(world.vault, "study.download")}
        response = archive_of(world, world.study)
        (event,) = [e for e in events(world.vault, "study.download") if e.seq not in before]
        assert (event.actor, event.object_type, event.object_id, event.outcome) == (
            f"token:{world.token_id}",
            "pseudonymised-study",
            world.study,
            "success",
        )
        assert event.remote == "testclient"
        assert f'"bytes":{len(response.content)}' in event.detail

    def test_instance_read_is_recorded_for_the_session_user(self, world: World) -> None:
        row = next(r for r in instance_rows(world.vault, world.study) if r.state == "done")
        before = {e.seq for e in events(world.vault, "instance.read")}
        response = world.as_user(world.engineer).get(f"/api/engineer/instances/{row.id}")
        assert response.status_code == 200
        (event,) = [e for e in events(world.vault, "instance.read") if e.seq not in before]
        assert (event.actor, event.object_id, event.outcome) == (
            f"user:{world.engineer.user_id}",
            row.id,
            "success",
        )

    def test_refused_reads_are_recorded_with_their_outcome(self, world: World) -> None:
        archive_of(world, world.queued)
        world.as_user(world.other_engineer).get(f"/api/engineer/studies/{world.study}/archive")
        outcomes = {
            (e.actor, e.object_id, e.outcome) for e in events(world.vault, "study.download")
        }
        assert (f"token:{world.token_id}", world.queued, "not-ready") in outcomes
        assert (f"user:{world.other_engineer.user_id}", world.study, "not-found") in outcomes

    def test_the_chain_still_verifies_after_the_reads(self, world: World) -> None:
        archive_of(world, world.study)
        assert world.vault.audit.verify() == []
