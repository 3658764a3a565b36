"""The world the access-log coverage tests run in, and how they make requests.

:class:`Env` is the authorisation matrix's callers (tests/test_authz_matrix.py)
on one app, plus data for every route to succeed on: a pseudonymised study
of a patient with planted PHI markers in the engineer's case, a second
patient for the data-subject requests, an upload with one file. Each
request gets fresh credentials; :meth:`Env.records_of` runs one request and
returns the access-log rows it appended.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.engineer_support import instance_rows, pseudonymise, two_series
from tests.services.auth_env import PASSWORD, Account, AuthWorld, form_nonce
from tests.services.vault_env import CaseContext
from tests.test_authz_matrix import Callers
from vault import breaches, dsr
from vault.admin import create_case
from vault.auth.links import Links
from vault.auth.sessions import csrf_token
from vault.catalog.deid import PseudonymisedStudy
from vault.catalog.models import AuditEvent, Case, Organisation
from vault.dsr_restriction import restrict
from vault.dsr_search import SubjectIdentifiers, find_subject_studies

Recorded = tuple[str, str, str | None]  # (action, outcome, object_type)


@dataclass(frozen=True)
class Row:
    """One access-log row, as appended by a request."""

    actor: str
    action: str
    outcome: str
    object_type: str | None
    object_id: str | None
    remote: str | None
    detail: str

    @property
    def recorded(self) -> Recorded:
        return (self.action, self.outcome, self.object_type)


@dataclass
class Env:
    callers: Callers
    client: TestClient
    ids: dict[str, str] = field(default_factory=dict)
    patient: SyntheticPatient = field(default_factory=SyntheticPatient)
    originals: list[Dataset] = field(default_factory=list)

    @property
    def world(self) -> AuthWorld:
        return self.callers.world

    def actor(self, column: str) -> str:
        if column in ("token", "expired", "revoked"):
            return f"token:{self.ids['token_id']}"
        account = self.callers.accounts["clinician" if column == "pending" else column]
        return f"user:{account.user_id}"

    def send(
        self,
        column: str,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        json: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """``method path`` as ``column`` (a matrix column), with fresh credentials."""
        self.client.cookies.clear()
        sent = dict(headers or {})
        if column in self.callers.tokens:
            sent["Authorization"] = f"Bearer {self.callers.tokens[column]}"
        elif column != "anon":
            account = self.callers.accounts["clinician" if column == "pending" else column]
            cookie = self.world.session_cookie(account, "totp" if column == "pending" else "full")
            self.client.cookies.set(self.world.cookie_name, cookie)
            if form is not None:
                form = {**form, "csrf_token": csrf_token(cookie)}
            sent["X-CSRF-Token"] = csrf_token(cookie)
        url = path.format(**self.ids)
        form = {k: v.format(**self.ids) for k, v in form.items()} if form is not None else None
        json = {k: v.format(**self.ids) for k, v in json.items()} if json is not None else None
        if form is not None:
            return self.client.post(url, data=form, headers=sent, follow_redirects=False)
        return self.client.request(
            method, url, headers=sent, json=json, content=content, follow_redirects=False
        )

    def last_seq(self) -> int:
        with self.world.vault.catalog.read_session() as session:
            return session.scalar(select(AuditEvent.seq).order_by(AuditEvent.seq.desc())) or 0

    def rows_since(self, seq: int) -> list[Row]:
        return [
            Row(e.actor, e.action, e.outcome, e.object_type, e.object_id, e.remote, e.detail)
            for e in self.world.vault.audit.events(since_seq=seq)
        ]

    def records_of(
        self,
        call: Callable[[Env], httpx.Response],
        prep: Callable[[Env], dict[str, str]] | None = None,
    ) -> tuple[httpx.Response, list[Row]]:
        """Run ``prep`` (its ids join :attr:`ids`), then ``call``: its response and rows."""
        if prep is not None:
            self.ids |= prep(self)
        before = self.last_seq()
        response = call(self)
        response.read()
        return response, self.rows_since(before)

    def phi(self) -> list[str]:
        """Every planted marker and every original UID of the stored study."""
        uids = {
            str(value)
            for ds in self.originals
            for value in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        }
        return [*self.patient.markers(), *sorted(uids)]


# Setting data up -------------------------------------------------------------


def case_context(env: Env, case_key: str) -> CaseContext:
    vault = env.world.vault
    with vault.catalog.read_session() as session:
        case = session.get(Case, env.ids[case_key])
        assert case is not None
        origin = IngestOrigin("cli", "cli", case.organisation_id, case.id)
    pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
    return CaseContext(vault, pipeline, origin, env.ids[case_key])


def ingest_all(case: CaseContext, datasets: list[Dataset]) -> str:
    ids = {case.pipeline.ingest(io.BytesIO(encode(ds)), case.origin).study_id for ds in datasets}
    (study_id,) = ids
    return study_id


def add_engineer_study(env: Env) -> None:
    """The planted-PHI study in case A (assigned to the engineer), pseudonymised."""
    env.originals = two_series(seed=11)
    env.patient = SyntheticPatient()
    study_id = ingest_all(case_context(env, "case_a"), env.originals)
    pseudo = pseudonymise(env.world.vault, study_id)
    with env.world.vault.catalog.read_session() as session:
        study = session.get(PseudonymisedStudy, pseudo)
        assert study is not None and study.pseudo_study_uid
        env.ids |= {"study_id": study_id, "pseudo_study": pseudo, "study": study.pseudo_study_uid}
    row = next(r for r in instance_rows(env.world.vault, pseudo) if r.state == "done")
    env.ids |= {
        "series": str(row.pseudo_series_uid),
        "instance": str(row.pseudo_sop_uid),
        "instance_id": row.id,
    }


def subject_study(env: Env, seed: int) -> SyntheticPatient:
    """A small study of a new patient, in a new case of hospital A."""
    patient = SyntheticPatient.generate(seed)
    series = list(make_ct_series(1, rows=16, columns=16, seed=seed, patient=patient))
    with env.world.vault.catalog.session() as session:
        org = session.get(Organisation, env.callers.ids["org_a"])
        assert org is not None
        env.ids[f"subject_{seed}"] = create_case(session, f"COV-{seed}", org).id
    ingest_all(case_context(env, f"subject_{seed}"), series)
    return patient


def dsr_request(env: Env, kind: str, *, seed: int = 0, verified: bool = False) -> str:
    """A request of ``kind`` (opened by the CLI); searched for patient ``seed`` if given."""
    vault = env.world.vault
    opened = dsr.open_request(vault, kind=kind, received_at=vault.clock.now(), actor="cli")
    if seed:
        patient = subject_study(env, seed)
        given = SubjectIdentifiers(patient.patient_id, (patient.issuer_of_patient_id,))
        find_subject_studies(vault, opened.id, given, actor="cli")
    if verified:
        dsr.verify_identity(vault, opened.id, actor="cli", method="in-person")
    return opened.id


def restricted_request(env: Env, seed: int) -> str:
    request_id = dsr_request(env, "restriction", seed=seed, verified=True)
    restrict(env.world.vault, request_id, actor="cli")
    return request_id


def breach(env: Env, *, decided: bool = False) -> str:
    """An incident opened by the CLI; ready to close (assessed, both notification
    decisions with their reasons) if ``decided``."""
    vault = env.world.vault
    found = breaches.record_breach(
        vault,
        detected_at=vault.clock.now(),
        nature=("confidentiality",),
        description="coverage",
        actor="cli",
    )
    decisions = (("authority", "unlikely-risk"), ("subjects", "no-high-risk"))
    for party, exemption in decisions if decided else ():
        breaches.record_notification(
            vault, found.id, actor="cli", party=party, exemption=exemption, reason="coverage"
        )
    if decided:
        texts = dict.fromkeys(("cause", "consequences", "measures", "lessons"), "coverage")
        breaches.update_assessment(vault, found.id, actor="cli", texts=texts)
    return found.id


def link_token(env: Env, account: Account) -> str:
    vault = env.world.vault
    with vault.catalog.session() as session:
        return Links(vault.settings, vault.clock).issue(session, account.user_id, "reset")


def login_form(env: Env, account: Account, password: str = PASSWORD) -> httpx.Response:
    client = env.world.new_client()
    data = {"email": account.email, "password": password, "form_nonce": form_nonce(client)}
    return client.post("/login", data=data, follow_redirects=False)
