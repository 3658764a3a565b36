"""Shared helpers for the engineers' access tests (REST downloads and DICOMweb).

:func:`engineer_world` runs the app on a fresh embedded vault and fills it:
one finished pseudonymised study (two CT series and a burned-in capture held
back as quarantined) in a case assigned to one engineer, a queued study in
the same case, another engineer with a case of their own, a clinician and an
admin. Studies are synthetic, ingested through the one pipeline and
pseudonymised by the real de-identification pipeline (Celery eager).
:func:`serving` runs the app under a real uvicorn server on a free port,
for clients that need a socket (dicomweb-client, aborted transfers);
:func:`wado_parts` and :func:`served_copies` read WADO-RS answers from it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from deidentify.tasks import create_celery_app, register_deidentification
from dicom_ingest import IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.deidentify_support import burned_in_capture
from tests.services.auth_env import BASE_URL, START, Account, AuthWorld, auth_test_settings
from tests.services.http_server import serving_app
from tests.services.vault_env import CaseContext, make_case
from vault.admin import assign_case
from vault.api.app import create_app
from vault.auth.digests import digest
from vault.catalog.accounts import ApiToken, User
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import AuditEvent, Case
from vault.clock import FrozenClock
from vault.core import Vault
from vault.settle import StudySettledHooks, settle_study


def two_series(seed: int, *, slices: tuple[int, int] = (3, 2), size: int = 64) -> list[Dataset]:
    """One synthetic CT study of two series, PHI planted everywhere the profile covers."""
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


def deidentify_settled(vault: Vault, study_id: str) -> PseudonymisedStudy:
    """Settle ``study_id`` and de-identify it eagerly; its pseudonymised row, in any state."""
    hooks = StudySettledHooks()
    register_deidentification(hooks, create_celery_app(vault.settings, vault=vault))
    settle_study(vault, study_id, hooks)
    with vault.catalog.session() as session:
        study = session.scalar(
            select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
        )
        assert study is not None
        session.expunge(study)
        return study


def pseudonymise(vault: Vault, study_id: str) -> str:
    """Settle ``study_id`` and de-identify it eagerly, to the end; the pseudonymised study's id."""
    study = deidentify_settled(vault, study_id)
    assert study.state == "done"
    return study.id


def instance_rows(vault: Vault, pseudo_study_id: str) -> list[PseudonymisedInstance]:
    with vault.catalog.session() as session:
        query = select(PseudonymisedInstance).where(
            PseudonymisedInstance.pseudo_study_id == pseudo_study_id
        )
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def served_rows(vault: Vault, pseudo_study_id: str) -> list[PseudonymisedInstance]:
    """The study's stored instances in archive order (by series, then SOP instance UID)."""
    rows = [row for row in instance_rows(vault, pseudo_study_id) if row.state == "done"]
    return sorted(rows, key=lambda row: (row.pseudo_series_uid or "", row.pseudo_sop_uid or ""))


def pseudo_study(vault: Vault, pseudo_study_id: str) -> PseudonymisedStudy:
    with vault.catalog.session() as session:
        study = session.get(PseudonymisedStudy, pseudo_study_id)
        assert study is not None
        session.expunge(study)
        return study


def tamper(vault: Vault, row: PseudonymisedInstance) -> None:
    """Flip one ciphertext byte in the middle of ``row``'s stored object."""
    assert row.object_key is not None
    with vault.store.open_reader(row.object_key) as reader:
        data = bytearray(reader.read())
    data[len(data) // 2] ^= 0x01
    with vault.store.open_writer(row.object_key) as writer:
        writer.write(bytes(data))


def events(vault: Vault, action: str) -> list[AuditEvent]:
    return [event for event in vault.audit.events() if event.action == action]


@dataclass
class World:
    auth: AuthWorld
    client: TestClient
    case: CaseContext
    other_case: CaseContext
    engineer: Account
    other_engineer: Account
    clinician: Account
    admin: Account
    token: str
    token_id: str
    study: str
    queued: str
    originals: list[Dataset]

    @property
    def vault(self) -> Vault:
        return self.auth.vault

    def bearer(self, secret: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret or self.token}"}

    def as_user(self, account: Account) -> TestClient:
        client = self.auth.new_client()
        client.cookies.set(self.auth.cookie_name, self.auth.session_cookie(account))
        return client


def token_id(vault: Vault, secret: str) -> str:
    with vault.catalog.session() as session:
        return session.scalars(
            select(ApiToken.id).where(ApiToken.token_hash == digest(secret))
        ).one()


def assign(vault: Vault, case_id: str, account: Account) -> None:
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


@contextmanager
def engineer_world(data_dir: Path, prefix: str) -> Iterator[World]:
    """The app and its data as the module docstring describes; cases named ``prefix-N``."""
    settings = auth_test_settings(data_dir)
    with TestClient(create_app(settings, clock=FrozenClock(START)), base_url=BASE_URL) as client:
        auth = AuthWorld(client, client.app.state.vault.clock)  # type: ignore[attr-defined]
        case = make_case(auth.vault, f"{prefix}-1")
        other_case = make_case(auth.vault, f"{prefix}-2")
        engineer = auth.add_user("eng@maker.example", "engineer", "Maker")
        other = auth.add_user("other-eng@maker.example", "engineer", "Maker")
        assign(auth.vault, case.case_id, engineer)
        assign(auth.vault, other_case.case_id, other)
        datasets = two_series(seed=1)
        study_id = ingest(case, [*datasets, burned_in_capture(datasets[0])])
        token = auth.token(engineer)
        yield World(
            auth=auth,
            client=auth.new_client(),
            case=case,
            other_case=other_case,
            engineer=engineer,
            other_engineer=other,
            clinician=auth.add_user("clin@hospital.example", "clinician", "Test Hospital"),
            admin=auth.add_user("admin@maker.example", "admin", "Maker"),
            token=token,
            token_id=token_id(auth.vault, token),
            study=pseudonymise(auth.vault, study_id),
            queued=_queued_study(case),
            originals=datasets,
        )


@contextmanager
def serving(vault: Vault) -> Iterator[str]:
    """The app on ``vault``'s data, under a real uvicorn server on a free port."""
    app = create_app(vault.settings, clock=FrozenClock(START))
    with serving_app(app, log_level="critical") as url:
        yield url


def wado_parts(url: str, path: str, headers: dict[str, str]) -> list[bytes]:
    """The parts of the WADO-RS answer at ``url`` + ``path``, split by dicomweb-client's
    own multipart decoder (the answer must be 200)."""
    response = requests.get(f"{url}{path}", headers=headers, stream=True, timeout=60)
    assert response.status_code == 200, response.text
    client = DICOMwebClient(url=f"{url}/dicomweb")
    return list(client._decode_multipart_message(response, stream=True))


def served_copies(world: World, pseudo_study_id: str, url: str) -> list[tuple[str, Dataset]]:
    """(WADO-RS path, pseudonymised copy as served) of each served instance of the study."""
    uid = pseudo_study(world.vault, pseudo_study_id).pseudo_study_uid
    copies = []
    for row in served_rows(world.vault, pseudo_study_id):
        series, instance = row.pseudo_series_uid, row.pseudo_sop_uid
        path = f"/dicomweb/studies/{uid}/series/{series}/instances/{instance}"
        (part,) = wado_parts(url, path, world.bearer())
        copies.append((path, dcmread(io.BytesIO(part))))
    return copies
