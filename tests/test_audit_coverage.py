"""Every route leaves exactly the access-log records expected, and none carries PHI.

COVERAGE maps each route of the app (method, path template) to one
authorised successful request and the exact records it appends (action,
outcome, object type), and where the route records refusals, one refused
request and its records. Each request runs as a column of the authorisation
matrix (tests/test_authz_matrix.py) with fresh credentials; the rows it
appended are compared with the entry, their actor must be the caller
(``user:<id>`` or ``token:<id>``) and their remote address set. A route
added to the app without an entry here fails the walk. Before any request a
patient with planted PHI markers is ingested and pseudonymised; no marker
and no original UID may appear in any audit row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from dicom_ingest.synthetic import SyntheticPatient
from tests.audit_coverage_support import (
    Env,
    Recorded,
    Row,
    add_engineer_study,
    breach,
    dsr_request,
    link_token,
    login_form,
    restricted_request,
    subject_study,
)
from tests.services.auth_env import (
    BASE_URL,
    PASSWORD,
    START,
    TOTP_STEP,
    AuthWorld,
    auth_test_settings,
    form_nonce,
)
from tests.test_authz_matrix import TUS, TUS_PATCH, Callers, _flat_routes
from tests.upload_support import OFFSET_STREAM as OFFSET
from tests.upload_support import slice_bytes
from vault.admin import get_or_create_organisation, register_pacs_node
from vault.api.app import create_app
from vault.auth.sessions import csrf_token
from vault.catalog.accounts import User
from vault.clock import FrozenClock

Call = Callable[[Env], httpx.Response]


@dataclass(frozen=True)
class Entry:
    """One route: a successful request and its records; a refused one and its records."""

    call: Call
    records: tuple[Recorded, ...] = ()
    refused: Call | None = None
    refused_records: tuple[Recorded, ...] = ()
    column: str = ""  # whose request it is (the expected actor)
    refused_column: str = ""  # the refused request's, when not the same


def ask(
    column: str,
    method: str,
    path: str,
    *,
    prep: Callable[[Env], dict[str, str]] | None = None,
    **kwargs: object,
) -> Call:
    """A request as ``column``; ``prep`` first adds ids the path needs (its records not counted)."""

    def call(env: Env) -> httpx.Response:
        return env.send(column, method, path, **kwargs)  # type: ignore[arg-type]

    call.prep = prep  # type: ignore[attr-defined]
    return call


def entry(
    column: str,
    call: Call,
    records: tuple[Recorded, ...],
    refused: Call | None = None,
    refused_records: tuple[Recorded, ...] = (),
) -> Entry:
    return Entry(call, records, refused, refused_records, column)


def _get(column: str, path: str, records: tuple[Recorded, ...], **kw: object) -> Entry:
    return entry(column, ask(column, "GET", path), records, **kw)  # type: ignore[arg-type]


def _dpo(path: str, form: dict[str, str], records: tuple[Recorded, ...], prep=None) -> Entry:
    return entry("dpo", ask("dpo", "POST", path, form=form, prep=prep), records)


def _request(kind: str, *, seed: int = 0, verified: bool = False):
    return lambda env: {"request_id": dsr_request(env, kind, seed=seed, verified=verified)}


def _breach(env: Env) -> dict[str, str]:
    return {"breach_id": breach(env)}


def _new_user(role: str = "clinician", *, enrolled: bool = True):
    def prep(env: Env) -> dict[str, str]:
        email = f"u{len(env.ids)}@a.example"
        account = env.world.add_user(email, role, "Hospital A", enrolled=enrolled)
        return {"user_id": account.user_id}

    return prep


def _new_pacs_node(env: Env) -> dict[str, str]:
    with env.world.vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Hospital A")
        node = register_pacs_node(session, f"COVPACS{len(env.ids)}", organisation)
        return {"node_id": node.id}


def _spare_token(env: Env) -> dict[str, str]:
    secret = env.world.token(env.callers.accounts["engineer"])
    return {"spare_token": env.callers._token_id(secret)}


_SLICE = slice_bytes(31, patient=SyntheticPatient(), plant_phi=True)


def _upload(env: Env) -> dict[str, str]:
    created = env.send("clinician", "POST", "/api/uploads", json={"case_id": "{case_unassigned}"})
    return {"upload_id": created.json()["upload_id"]}


def _upload_with_series(env: Env) -> dict[str, str]:
    """An upload holding one slice of the planted patient, and its series' id."""
    ids = _upload(env)
    env.ids |= ids
    headers = TUS | OFFSET | {"Upload-Length": str(len(_SLICE))}
    sent = env.send(
        "clinician", "POST", "/api/uploads/{upload_id}/files", headers=headers, content=_SLICE
    )
    assert sent.status_code == 201, sent.text
    summary = env.send("clinician", "GET", "/api/uploads/{upload_id}/summary").json()
    return ids | {"series_id": summary["series"][0]["series_id"]}


def _subject_request(env: Env) -> dict[str, str]:
    patient = subject_study(env, 26)
    return {
        "request_id": dsr_request(env, "access"),
        "patient_id": patient.patient_id,
        "issuer": patient.issuer_of_patient_id,
    }


def _upload_with_file(env: Env) -> dict[str, str]:
    ids = _upload(env)
    env.ids |= ids
    headers = TUS | {"Upload-Length": str(len(_SLICE))}
    created = env.send("clinician", "POST", "/api/uploads/{upload_id}/files", headers=headers)
    return ids | {"file_id": created.headers["location"].rsplit("/", 1)[1]}


def _login(env: Env) -> httpx.Response:
    return login_form(env, env.callers.accounts["clinician"])


def _wrong_password(env: Env) -> httpx.Response:
    return login_form(env, env.callers.accounts["clinician"], "wrong " + PASSWORD)


def _totp(env: Env, good: bool = True) -> httpx.Response:
    account = env.callers.accounts["clinician"]
    code = pyotp.TOTP(account.totp_secret).at(env.world.clock.now()) if good else "000000"
    env.world.clock.advance(TOTP_STEP)  # the next login needs a fresh code
    return env.send("pending", "POST", "/login/totp", form={"code": code})


def _enrol(env: Env, good: bool = True) -> httpx.Response:
    account = env.world.add_user(f"enrol{env.last_seq()}@a.example", "clinician", enrolled=False)
    env.callers.accounts["enrolling"] = account
    client = env.world.new_client()
    cookie = env.world.session_cookie(account, "enrol")
    client.cookies.set(env.world.cookie_name, cookie)
    client.get("/enrol")
    with env.world.vault.catalog.read_session() as session:
        user = session.get(User, account.user_id)
        secret = env.world.auth.sealer.open(user.id, user.totp_sealed)
    code = pyotp.TOTP(secret).at(env.world.clock.now()) if good else "000000"
    data = {"code": code, "csrf_token": csrf_token(cookie)}
    return client.post("/enrol", data=data, follow_redirects=False)


def _set_password(env: Env, good: bool = True) -> httpx.Response:
    account = env.callers.spare_user
    token = link_token(env, account) if good else "not-a-link"
    client = env.world.new_client()
    nonce = form_nonce(client, "/set-password")
    data = {"token": token, "password": PASSWORD, "password_confirm": PASSWORD, "form_nonce": nonce}
    return client.post("/set-password", data=data, follow_redirects=False)


AUTH = "auth"
OUT_OF_REACH = "/api/cases/{case_b}"
ZERO = "0123456789abcdef"

COVERAGE: dict[tuple[str, str], Entry] = {
    # Framework pages and probes: no data read or changed.
    ("GET", "/healthz"): _get("anon", "/healthz", ()),
    ("GET", "/readyz"): _get("anon", "/readyz", ()),
    # The API's description: route names and schemas, no data.
    ("GET", "/openapi.json"): _get("engineer", "/openapi.json", ()),
    # Operators' figures, scraped by Prometheus with a ``metrics`` token every 15-60 s:
    # counts of catalog states, no health data and no identifier. A record per scrape
    # would flood the 12-month access log; the token's creation and revocation are
    # recorded instead (vault/api/routes_metrics.py).
    ("GET", "/metrics"): _get("metrics", "/metrics", ()),
    # Forms and landing pages: they show the caller's own identity or an empty form.
    ("GET", "/login"): _get("anon", "/login", ()),
    ("GET", "/login/totp"): _get("pending", "/login/totp", ()),
    ("GET", "/set-password"): _get("anon", "/set-password", ()),
    ("GET", "/"): _get("clinician", "/", ()),
    ("GET", "/enrol"): _get(
        "pending", "/enrol", ()
    ),  # makes the pending secret, recorded when confirmed
    ("GET", "/upload"): _get(
        "clinician", "/upload", ()
    ),  # lists the caller's open cases, no study data
    ("POST", "/login"): Entry(
        _login,
        (("auth.password", "success", AUTH),),
        _wrong_password,
        (("auth.login", "failure-credentials", AUTH),),
        "clinician",
    ),
    ("POST", "/login/totp"): Entry(
        _totp,
        (("auth.login", "success", AUTH),),
        lambda env: _totp(env, False),
        (("auth.login", "failure-code", AUTH),),
        "clinician",
    ),
    ("POST", "/enrol"): Entry(
        _enrol,
        (("auth.totp-enrol", "success", AUTH), ("auth.login", "success", AUTH)),
        lambda env: _enrol(env, False),
        (("auth.login", "failure-code", AUTH),),
        "enrolling",
    ),
    ("POST", "/set-password"): Entry(
        _set_password,
        (("auth.password-set", "success", AUTH),),
        lambda env: _set_password(env, False),
        (("auth.password-set", "failure-link", AUTH),),
        "spare_user",
        "anon",  # an unknown link names nobody
    ),
    ("POST", "/logout"): entry(
        "clinician",
        ask("clinician", "POST", "/logout", form={}),
        (("auth.logout", "success", AUTH),),
    ),
    ("POST", "/login/cancel"): Entry(  # a pending login of the clinician, ended
        ask("pending", "POST", "/login/cancel", form={}),
        (("auth.logout", "success", AUTH),),
        column="clinician",
    ),
    ("GET", "/account/tokens"): _get("engineer", "/account/tokens", ()),  # own token names only
    ("POST", "/account/tokens"): entry(
        "engineer",
        ask("engineer", "POST", "/account/tokens", form={"name": "cov"}),
        (("token.create", "success", "token"),),
    ),
    ("POST", "/account/tokens/{token_id}/revoke"): entry(
        "engineer",
        ask("engineer", "POST", "/account/tokens/{spare_token}/revoke", form={}, prep=_spare_token),
        (("token.revoke", "success", "token"),),
    ),
    ("GET", "/api/me"): _get("clinician", "/api/me", ()),  # the caller's own identity
    ("GET", "/api/cases"): _get("clinician", "/api/cases", (("case.list", "success", "query"),)),
    ("GET", "/api/cases/{case_id}"): _get(
        "clinician",
        "/api/cases/{case_a}",
        (("case.read", "success", "case"),),
        refused=ask("clinician", "GET", OUT_OF_REACH),
        refused_records=(("case.read", "not-found", "case"),),
    ),
    # The admin page lists users and cases: the view is recorded, counts only.
    ("GET", "/admin"): _get("admin", "/admin", (("admin.view", "success", "query"),)),
    ("POST", "/admin/organisations"): entry(
        "admin",
        ask(
            "admin",
            "POST",
            "/admin/organisations",
            form={"name": "Hospital Cov", "kind": "hospital"},
        ),
        (("admin.org-create", "success", "organisation"),),
    ),
    ("POST", "/admin/users"): entry(
        "admin",
        ask(
            "admin",
            "POST",
            "/admin/users",
            form={"email": "cov@a.example", "role": "clinician", "organisation_id": "{org_a}"},
        ),
        (("admin.user-create", "success", "user"),),
    ),
    ("POST", "/admin/users/{user_id}/reset"): entry(
        "admin",
        ask("admin", "POST", "/admin/users/{user_id}/reset", form={}, prep=_new_user()),
        (("admin.password-reset", "success", "user"),),
    ),
    ("POST", "/admin/users/{user_id}/disable"): entry(
        "admin",
        ask("admin", "POST", "/admin/users/{user_id}/disable", form={}, prep=_new_user()),
        (("admin.user-disable", "success", "user"),),
    ),
    ("POST", "/admin/pacs-nodes"): entry(
        "admin",
        ask(
            "admin",
            "POST",
            "/admin/pacs-nodes",
            form={"ae_title": "COVPACS", "organisation_id": "{org_a}"},
        ),
        (("admin.pacs-create", "success", "pacs_node"),),
    ),
    ("POST", "/admin/pacs-nodes/{node_id}/disable"): entry(
        "admin",
        ask("admin", "POST", "/admin/pacs-nodes/{node_id}/disable", form={}, prep=_new_pacs_node),
        (("admin.pacs-disable", "success", "pacs_node"),),
    ),
    ("POST", "/admin/pacs-nodes/{node_id}/enable"): entry(
        "admin",
        ask("admin", "POST", "/admin/pacs-nodes/{node_id}/enable", form={}, prep=_new_pacs_node),
        (("admin.pacs-enable", "success", "pacs_node"),),
    ),
    ("POST", "/admin/cases"): entry(
        "admin",
        ask(
            "admin",
            "POST",
            "/admin/cases",
            form={"reference": "COV-NEW", "organisation_id": "{org_a}"},
        ),
        (("admin.case-create", "success", "case"),),
    ),
    ("POST", "/admin/assignments"): entry(
        "admin",
        ask(
            "admin",
            "POST",
            "/admin/assignments",
            form={"case_id": "{case_b}", "user_id": "{engineer}"},
        ),
        (("admin.assign", "success", "case"),),
    ),
    # Engineers' REST API and DICOMweb (token callers).
    ("GET", "/api/engineer/studies"): _get(
        "token", "/api/engineer/studies", (("study.list", "success", "query"),)
    ),
    ("GET", "/api/engineer/studies/{pseudo_study_id}"): _get(
        "token",
        "/api/engineer/studies/{pseudo_study}",
        (("study.metadata", "success", "pseudonymised-study"),),
        refused=ask("token", "GET", f"/api/engineer/studies/{ZERO}"),
        refused_records=(("study.metadata", "not-found", "pseudonymised-study"),),
    ),
    ("GET", "/api/engineer/studies/{pseudo_study_id}/series/{pseudo_series_uid}"): _get(
        "token",
        "/api/engineer/studies/{pseudo_study}/series/{series}",
        (("series.metadata", "success", "pseudonymised-study"),),
    ),
    ("GET", "/api/engineer/studies/{pseudo_study_id}/archive"): _get(
        "token",
        "/api/engineer/studies/{pseudo_study}/archive",
        (("study.download", "success", "pseudonymised-study"),),
    ),
    ("GET", "/api/engineer/studies/{pseudo_study_id}/series/{pseudo_series_uid}/archive"): _get(
        "token",
        "/api/engineer/studies/{pseudo_study}/series/{series}/archive",
        (("series.download", "success", "pseudonymised-study"),),
    ),
    ("GET", "/api/engineer/instances/{pseudo_instance_id}"): _get(
        "token",
        "/api/engineer/instances/{instance_id}",
        (("instance.read", "success", "pseudonymised-instance"),),
    ),
    # HEAD: the size and ETag a download manager asks for first, recorded as such.
    ("HEAD", "/api/engineer/studies/{pseudo_study_id}/archive"): entry(
        "token",
        ask("token", "HEAD", "/api/engineer/studies/{pseudo_study}/archive"),
        (("study.download", "headers-only", "pseudonymised-study"),),
    ),
    ("HEAD", "/api/engineer/studies/{pseudo_study_id}/series/{pseudo_series_uid}/archive"): entry(
        "token",
        ask("token", "HEAD", "/api/engineer/studies/{pseudo_study}/series/{series}/archive"),
        (("series.download", "headers-only", "pseudonymised-study"),),
    ),
    ("HEAD", "/api/engineer/instances/{pseudo_instance_id}"): entry(
        "token",
        ask("token", "HEAD", "/api/engineer/instances/{instance_id}"),
        (("instance.read", "headers-only", "pseudonymised-instance"),),
    ),
    ("GET", "/dicomweb/studies"): _get(
        "token", "/dicomweb/studies", (("dicomweb.search", "success", "query"),)
    ),
    ("GET", "/dicomweb/series"): _get(
        "token", "/dicomweb/series", (("dicomweb.search", "success", "query"),)
    ),
    ("GET", "/dicomweb/instances"): _get(
        "token", "/dicomweb/instances", (("dicomweb.search", "success", "query"),)
    ),
    ("GET", "/dicomweb/studies/{study}/series"): _get(
        "token", "/dicomweb/studies/{study}/series", (("dicomweb.search", "success", "query"),)
    ),
    ("GET", "/dicomweb/studies/{study}/instances"): _get(
        "token", "/dicomweb/studies/{study}/instances", (("dicomweb.search", "success", "query"),)
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/instances",
        (("dicomweb.search", "success", "query"),),
    ),
    ("GET", "/dicomweb/studies/{study}"): _get(
        "token",
        "/dicomweb/studies/{study}",
        (("dicomweb.retrieve", "success", "pseudonymised-study"),),
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}",
        (("dicomweb.retrieve", "success", "pseudonymised-study"),),
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
        (("dicomweb.retrieve", "success", "pseudonymised-instance"),),
    ),
    ("GET", "/dicomweb/studies/{study}/metadata"): _get(
        "token",
        "/dicomweb/studies/{study}/metadata",
        (("dicomweb.metadata", "success", "pseudonymised-study"),),
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}/metadata"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/metadata",
        (("dicomweb.metadata", "success", "pseudonymised-study"),),
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
        (("dicomweb.metadata", "success", "pseudonymised-instance"),),
    ),
    ("GET", "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/1",
        (("dicomweb.frames", "success", "pseudonymised-instance"),),
        refused=ask(
            "token",
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/0",
        ),
        refused_records=(("dicomweb.frames", "bad-request", "pseudonymised-instance"),),
    ),
    (
        "GET",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/{attribute}",
    ): _get(
        "token",
        "/dicomweb/studies/{study}/series/{series}/instances/{instance}/bulkdata/7FE00010",
        (("dicomweb.bulkdata", "success", "pseudonymised-instance"),),
    ),
    ("GET", "/engineer"): _get("engineer", "/engineer", (("study.list", "success", "query"),)),
    ("GET", "/engineer/studies/{pseudo_study_id}/series/{series_uid}/thumbnail.png"): _get(
        "engineer",
        "/engineer/studies/{pseudo_study}/series/{series}/thumbnail.png",
        (("thumbnail.read", "success", "pseudonymised-study"),),
    ),
    # The DPO's pages.
    # The overview lists requests and incidents: the view is recorded, counts only.
    ("GET", "/dpo"): _get("dpo", "/dpo", (("dsr.list", "success", "query"),)),
    ("POST", "/dpo/requests"): _dpo(
        "/dpo/requests",
        {"kind": "access", "received": "2026-01-05"},
        (("dsr.open", "success", "dsr"),),
    ),
    ("GET", "/dpo/requests/{request_id}"): entry(
        "dpo",
        ask("dpo", "GET", "/dpo/requests/{request_id}", prep=_request("access")),
        (("dsr.view", "success", "dsr"),),
    ),
    ("POST", "/dpo/requests/{request_id}/search"): _dpo(
        "/dpo/requests/{request_id}/search",
        {"patient_id": "{patient_id}", "issuer": "{issuer}"},
        (("dsr.search", "success", "dsr"),),
        _subject_request,
    ),
    ("POST", "/dpo/requests/{request_id}/verify"): _dpo(
        "/dpo/requests/{request_id}/verify",
        {"method": "in-person"},
        (("dsr.verify", "success", "dsr"),),
        _request("access"),
    ),
    ("POST", "/dpo/requests/{request_id}/extend"): _dpo(
        "/dpo/requests/{request_id}/extend",
        {"months": "1", "reason": "complexity"},
        (("dsr.extend", "success", "dsr"),),
        _request("access"),
    ),
    ("POST", "/dpo/requests/{request_id}/package"): _dpo(
        "/dpo/requests/{request_id}/package",
        {},
        (("dsr.export", "success", "dsr"), ("study.export", "success", "study")),
        _request("access", seed=21, verified=True),
    ),
    ("POST", "/dpo/requests/{request_id}/rectify"): _dpo(
        "/dpo/requests/{request_id}/rectify",
        {"birth_date": "19610315"},
        (("dsr.rectify", "success", "study"),),
        _request("rectification", seed=22, verified=True),
    ),
    ("POST", "/dpo/requests/{request_id}/restrict"): _dpo(
        "/dpo/requests/{request_id}/restrict",
        {},
        (("dsr.restrict", "success", "study"),),
        _request("restriction", seed=23, verified=True),
    ),
    ("POST", "/dpo/requests/{request_id}/lift-restriction"): _dpo(
        "/dpo/requests/{request_id}/lift-restriction",
        {},
        (("dsr.lift-restriction", "success", "study"),),
        lambda env: {"request_id": restricted_request(env, 24)},
    ),
    ("POST", "/dpo/requests/{request_id}/erase"): _dpo(
        "/dpo/requests/{request_id}/erase",
        {},
        (("study.erase", "success", "study"), ("dsr.erase", "success", "study")),
        _request("erasure", seed=25, verified=True),
    ),
    ("POST", "/dpo/requests/{request_id}/close"): _dpo(
        "/dpo/requests/{request_id}/close",
        {"outcome": "completed", "note": "cov"},
        (("dsr.close", "success", "dsr"),),
        _request("access"),
    ),
    ("POST", "/dpo/breaches"): _dpo(
        "/dpo/breaches",
        {"detected": "2026-01-05T08:00", "nature": "confidentiality", "description": "cov"},
        (("breach.record", "success", "breach"),),
    ),
    ("GET", "/dpo/breaches/{breach_id}"): entry(
        "dpo",
        ask("dpo", "GET", "/dpo/breaches/{breach_id}", prep=_breach),
        (("breach.view", "success", "breach"),),
    ),
    ("POST", "/dpo/breaches/{breach_id}/assessment"): _dpo(
        "/dpo/breaches/{breach_id}/assessment",
        {"consequences": "cov"},
        (("breach.update", "success", "breach"),),
        _breach,
    ),
    ("POST", "/dpo/breaches/{breach_id}/entries"): _dpo(
        "/dpo/breaches/{breach_id}/entries",
        {"kind": "note", "text": "cov"},
        (("breach.entry", "success", "breach"),),
        _breach,
    ),
    ("POST", "/dpo/breaches/{breach_id}/notify"): _dpo(
        "/dpo/breaches/{breach_id}/notify",
        {"party": "authority", "exemption": "unlikely-risk", "reason": "coverage"},
        (("breach.entry", "success", "breach"), ("breach.notify", "success", "breach")),
        _breach,
    ),
    ("POST", "/dpo/breaches/{breach_id}/close"): _dpo(
        "/dpo/breaches/{breach_id}/close",
        {},
        (("breach.close", "success", "breach"),),
        lambda env: {"breach_id": breach(env, decided=True)},
    ),
    # Uploads (clinicians).
    ("GET", "/cases/{case_id}/upload"): _get(
        "clinician", "/cases/{case_a}/upload", ()
    ),  # the upload form of a case
    ("GET", "/api/uploads/{upload_id}/summary"): entry(
        "clinician",
        ask("clinician", "GET", "/api/uploads/{upload_id}/summary", prep=_upload),
        (("series.metadata", "success", "upload"),),
    ),
    ("GET", "/api/uploads/{upload_id}/series/{series_id}/thumbnail.png"): entry(
        "clinician",
        ask(
            "clinician",
            "GET",
            "/api/uploads/{upload_id}/series/{series_id}/thumbnail.png",
            prep=_upload_with_series,
        ),
        (("instance.read", "success", "instance"),),
    ),
    ("POST", "/api/uploads"): entry(
        "clinician",
        ask("clinician", "POST", "/api/uploads", json={"case_id": "{case_a}"}),
        (("upload.create", "success", "upload"),),
    ),
    ("GET", "/api/uploads"): entry(
        "clinician",
        lambda env: env.send("clinician", "GET", f"/api/uploads?case_id={env.ids['case_a']}"),
        (("upload.list", "success", "case"),),
    ),
    ("GET", "/api/uploads/{upload_id}"): entry(
        "clinician",
        ask("clinician", "GET", "/api/uploads/{upload_id}", prep=_upload),
        (("upload.read", "success", "upload"),),
    ),
    ("POST", "/api/uploads/{upload_id}/complete"): entry(
        "clinician",
        ask("clinician", "POST", "/api/uploads/{upload_id}/complete", prep=_upload_with_file),
        (("upload.complete", "success", "upload"),),
    ),
    ("GET", "/api/uploads/{upload_id}/files/{file_id}/result"): entry(
        "clinician",
        ask(
            "clinician",
            "GET",
            "/api/uploads/{upload_id}/files/{file_id}/result",
            prep=_upload_with_file,
        ),
        (("upload.read", "success", "upload"),),
    ),
    ("OPTIONS", "/api/uploads/{upload_id}/files"): entry(
        "clinician",
        ask("clinician", "OPTIONS", "/api/uploads/{upload_id}/files", headers=TUS, prep=_upload),
        (),
    ),  # tus capability discovery: a protocol probe, not recorded
    ("POST", "/api/uploads/{upload_id}/files"): entry(
        "clinician",
        ask(
            "clinician",
            "POST",
            "/api/uploads/{upload_id}/files",
            headers=TUS | {"Upload-Length": "10"},
            prep=_upload,
        ),
        (),
    ),
    ("HEAD", "/api/uploads/{upload_id}/files/{file_id}"): entry(
        "clinician",
        ask(
            "clinician",
            "HEAD",
            "/api/uploads/{upload_id}/files/{file_id}",
            headers=TUS,
            prep=_upload_with_file,
        ),
        (),
    ),  # tus offset of own file: a protocol probe, not recorded
    ("PATCH", "/api/uploads/{upload_id}/files/{file_id}"): entry(
        "clinician",
        ask(
            "clinician",
            "PATCH",
            "/api/uploads/{upload_id}/files/{file_id}",
            headers=TUS_PATCH,
            content=_SLICE,
            prep=_upload_with_file,
        ),
        (("instance.store", "success", "instance"),),
    ),
    ("DELETE", "/api/uploads/{upload_id}/files/{file_id}"): entry(
        "clinician",
        ask(
            "clinician",
            "DELETE",
            "/api/uploads/{upload_id}/files/{file_id}",
            headers=TUS,
            prep=_upload_with_file,
        ),
        (("upload.file.terminate", "success", "upload"),),
    ),
}


def _app_routes(app: object) -> Iterator[tuple[str, str]]:
    for path, route in _flat_routes(app):
        if isinstance(route, Mount):
            continue
        methods = set(getattr(route, "methods", None) or ())
        for method in sorted(methods):
            if method != "HEAD" or "GET" not in methods:
                yield method, path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    clock = FrozenClock(START)
    settings = auth_test_settings(tmp_path_factory.mktemp("coverage") / "data")
    with TestClient(create_app(settings, clock=clock), base_url=BASE_URL) as client:
        callers = Callers(AuthWorld(client, clock))
        made = Env(callers, callers.world.new_client(), dict(callers.ids))
        made.ids["token_id"] = callers._token_id(callers.tokens["token"])
        add_engineer_study(made)
        yield made


def _actor(env: Env, column: str) -> str:
    if column == "anon":
        return "anonymous"
    if column == "spare_user":
        return f"user:{env.callers.spare_user.user_id}"
    if column == "enrolling":
        return f"user:{env.callers.accounts['enrolling'].user_id}"
    return env.actor(column)


def _assert_rows(env: Env, column: str, rows: list[Row], expected: tuple[Recorded, ...]) -> None:
    assert [row.recorded for row in rows] == list(expected), rows
    for row in rows:
        assert row.actor == _actor(env, column), row
        assert row.remote, row  # every request-driven record carries the caller's address
    _assert_no_phi(env, rows)


def _assert_no_phi(env: Env, rows: list[Row]) -> None:
    for row in rows:
        text = " ".join(str(v) for v in (row.actor, row.object_id, row.remote, row.detail))
        leaked = [marker for marker in env.phi() if marker.lower() in text.lower()]
        assert leaked == [], row


CASES = sorted(COVERAGE.items(), key=lambda item: item[0][1])


class TestEveryRouteRecordsWhatItDoes:
    def test_every_route_has_an_entry(self, env: Env) -> None:
        assert sorted(set(_app_routes(env.client.app)) - set(COVERAGE)) == []

    def test_no_entry_names_a_route_that_is_gone(self, env: Env) -> None:
        assert sorted(set(COVERAGE) - set(_app_routes(env.client.app))) == []

    @pytest.mark.parametrize(("route", "item"), CASES, ids=[f"{m} {p}" for (m, p), _ in CASES])
    def test_an_authorised_request_appends_exactly_its_records(
        self, env: Env, route: tuple[str, str], item: Entry
    ) -> None:
        response, rows = env.records_of(item.call, getattr(item.call, "prep", None))
        assert response.status_code < 400, response.text[:300]
        _assert_rows(env, item.column, rows, item.records)

    @pytest.mark.parametrize(
        ("route", "item"),
        [case for case in CASES if case[1].refused is not None],
        ids=[f"{m} {p}" for (m, p), item in CASES if item.refused is not None],
    )
    def test_a_refused_request_appends_exactly_its_records(
        self, env: Env, route: tuple[str, str], item: Entry
    ) -> None:
        assert item.refused is not None
        response, rows = env.records_of(item.refused, getattr(item.refused, "prep", None))
        assert response.status_code >= 400 or route[1] in ("/login",), response.status_code
        _assert_rows(env, item.refused_column or item.column, rows, item.refused_records)
