"""The data-protection officer's pages: data-subject requests (the breach register is beside).

``GET /dpo`` lists the open requests by deadline (overdue ones highlighted)
and the open incidents of the breach register (recorded as ``dsr.list``,
counts only). Each request has its page:
deadline and extension, identity verification, the studies matched to it,
the actions its kind calls for (package download, rectification,
restriction, erasure) and its chronology with the DPO's notes. Every form
posts with the session's CSRF token; every action is carried out by
:mod:`vault.dsr` and its sibling modules, which record it on the request and
in the access log as the DPO; opening a request's page, where its sealed notes
are shown, is recorded too (``dsr.view``). A refused action re-renders the
page with the reason and its status (a refused new request or incident keeps
what was typed in its form); an unknown request answers 404.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from sqlalchemy import select

from crypto.errors import CryptoError
from vault import dsr
from vault.api.dpo_forms import (
    REFUSALS,
    Dpo,
    Short,
    Text,
    moment,
    perform,
    record_view,
    vault_of,
)
from vault.api.pages import render
from vault.api.refusals import record_refusal
from vault.auth.guard import caller_record, remote_of
from vault.auth.permissions import Principal
from vault.breach_views import list_breaches
from vault.catalog.breaches import DATA_CATEGORIES, NATURES
from vault.catalog.dsr import REQUEST_KINDS
from vault.catalog.models import Organisation
from vault.dsr_erasure import ErasureOutcome, erase
from vault.dsr_package import prepare_package, stream_package
from vault.dsr_rectify import RECTIFIABLE, rectify
from vault.dsr_restriction import lift_restriction, restrict
from vault.dsr_search import SubjectIdentifiers, find_subject_studies
from vault.dsr_views import events_of, list_requests, studies_of
from vault.errors import VaultError, http_status

router = APIRouter(prefix="/dpo", include_in_schema=False)
RequestId = Annotated[str, Path(max_length=40)]


@router.get("", response_class=HTMLResponse)
def overview(request: Request, principal: Dpo) -> Response:
    """Open requests and incidents; the view is recorded (``dsr.list``, counts only)."""
    return overview_page(request, viewer=principal)


def overview_page(
    request: Request,
    *,
    status_code: int = 200,
    error: str | None = None,
    viewer: Principal | None = None,
    entered: Mapping[str, Mapping[str, Any]] | None = None,
) -> Response:
    """``/dpo``; ``entered`` holds the values typed in a refused form, by the form's id."""
    vault = vault_of(request)
    requests, breaches = list_requests(vault), list_breaches(vault)
    if viewer is not None:
        counts = {"requests": len(requests), "breaches": len(breaches)}
        vault.audit.record(
            caller_record(request, viewer, "dsr.list", object_type="query", detail=counts)
        )
    return render(
        request,
        "dpo.html",
        status_code=status_code,
        error=error,
        entered=entered or {},
        requests=requests,
        breaches=breaches,
        kinds=REQUEST_KINDS,
        natures=NATURES,
        categories=DATA_CATEGORIES,
        today=vault.clock.now().date().isoformat(),
    )


@router.post("/requests")
def open_request(
    request: Request,
    principal: Dpo,
    kind: Short,
    received: Short,
    reference: Short = "",
    note: Text = "",
) -> Response:
    typed = {"kind": kind, "received": received, "reference": reference, "note": note}
    return perform(
        request,
        lambda: dsr.open_request(
            vault_of(request),
            kind=kind,
            received_at=moment(received, "date of receipt"),
            actor=principal.actor,
            remote=remote_of(request),
            reference=reference or None,
            note=note,
        ),
        refused=partial(overview_page, request, entered={"new-request": typed}),
        then=lambda opened: _done(opened.id),
    )


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, principal: Dpo, request_id: RequestId) -> Response:
    page = _detail(request, request_id)
    record_view(request, principal, "dsr", dsr.get_request(vault_of(request), request_id).id)
    return page


def _detail(
    request: Request,
    ref: str,
    *,
    status_code: int = 200,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    vault = vault_of(request)
    found = dsr.get_request(vault, ref)
    with vault.catalog.read_session() as session:
        organisations = list(session.scalars(select(Organisation).order_by(Organisation.name)))
    return render(
        request,
        "dpo_request.html",
        status_code=status_code,
        error=error,
        notice=notice,
        req=found,
        now=vault.clock.now(),
        actions=dsr.ACTIONS_BY_KIND[found.kind] if found.state in ("received", "verified") else (),
        studies=studies_of(vault, found),
        events=events_of(vault, found),
        methods=dsr.VERIFICATION_METHODS,
        reasons=dsr.EXTENSION_REASONS,
        outcomes=("completed", "refused", "withdrawn"),
        organisations=organisations,
        rectifiable=RECTIFIABLE,
    )


def _done(request_id: str) -> Response:
    return RedirectResponse(f"/dpo/requests/{request_id}", status_code=303)


@router.post("/requests/{request_id}/search", response_class=HTMLResponse)
def search(
    request: Request,
    principal: Dpo,
    request_id: RequestId,
    patient_id: Short,
    issuer: Short = "",
    organisation_id: Short = "",
    name: Short = "",
    birth_date: Short = "",
) -> Response:
    given = SubjectIdentifiers(
        patient_id, (issuer,), organisation_id or None, name or None, birth_date or None
    )
    return perform(
        request,
        lambda: find_subject_studies(
            vault_of(request), request_id, given, actor=principal.actor, remote=remote_of(request)
        ),
        refused=partial(_detail, request, request_id),
        then=lambda found: _detail(
            request,
            request_id,
            notice=f"{len(found.matched)} studies matched; "
            f"{found.excluded} left out by the header check",
        ),
    )


@router.post("/requests/{request_id}/verify")
def verify(
    request: Request, principal: Dpo, request_id: RequestId, method: Short, note: Text = ""
) -> Response:
    return perform(
        request,
        lambda: dsr.verify_identity(
            vault_of(request),
            request_id,
            actor=principal.actor,
            remote=remote_of(request),
            method=method,
            note=note,
        ),
        refused=partial(_detail, request, request_id),
        then=lambda _: _done(request_id),
    )


@router.post("/requests/{request_id}/extend")
def extend(
    request: Request,
    principal: Dpo,
    request_id: RequestId,
    months: Annotated[int, Form(ge=1, le=2)],
    reason: Short,
    note: Text = "",
) -> Response:
    return perform(
        request,
        lambda: dsr.extend_deadline(
            vault_of(request),
            request_id,
            actor=principal.actor,
            remote=remote_of(request),
            months=months,
            reason=reason,
            note=note,
        ),
        refused=partial(_detail, request, request_id),
        then=lambda _: _done(request_id),
    )


@router.post("/requests/{request_id}/package")
def package(request: Request, principal: Dpo, request_id: RequestId) -> Response:
    """The access or portability package (ZIP: DICOM originals and manifest.json)."""
    vault = vault_of(request)
    try:
        prepared = prepare_package(vault, request_id)
    except REFUSALS as exc:
        record_refusal(request, http_status(exc), exc.reason)
        return _detail(request, request_id, status_code=http_status(exc), error=str(exc))
    chunks = stream_package(vault, prepared, actor=principal.actor, remote=remote_of(request))
    try:
        first = next(chunks, b"")
    except (CryptoError, VaultError) as exc:
        return _detail(request, request_id, status_code=http_status(exc), error=str(exc))
    headers = {"Content-Disposition": f'attachment; filename="{prepared.reference}.zip"'}
    return StreamingResponse(_chain(first, chunks), media_type="application/zip", headers=headers)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


@router.post("/requests/{request_id}/rectify", response_class=HTMLResponse)
def rectify_attributes(
    request: Request,
    principal: Dpo,
    request_id: RequestId,
    patient_name: Short = "",
    birth_date: Short = "",
    sex: Short = "",
    patient_id: Short = "",
    issuer: Short = "",
) -> Response:
    """Correct the attributes given (fields left empty stay as they are)."""
    given = zip(RECTIFIABLE, (patient_name, birth_date, sex, patient_id, issuer), strict=True)
    changes = {keyword: value for keyword, value in given if value.strip()}
    return perform(
        request,
        lambda: rectify(
            vault_of(request), request_id, changes, actor=principal.actor, remote=remote_of(request)
        ),
        refused=partial(_detail, request, request_id),
        then=lambda done: _detail(request, request_id, notice=f"{len(done)} studies rectified"),
    )


@router.post("/requests/{request_id}/restrict", response_class=HTMLResponse)
def restrict_studies(request: Request, principal: Dpo, request_id: RequestId) -> Response:
    return perform(
        request,
        lambda: restrict(
            vault_of(request), request_id, actor=principal.actor, remote=remote_of(request)
        ),
        refused=partial(_detail, request, request_id),
        then=lambda placed: _detail(
            request, request_id, notice=f"{len(placed)} studies restricted"
        ),
    )


@router.post("/requests/{request_id}/lift-restriction", response_class=HTMLResponse)
def lift(request: Request, principal: Dpo, request_id: RequestId) -> Response:
    lifted = lift_restriction(
        vault_of(request), request_id, actor=principal.actor, remote=remote_of(request)
    )
    return _detail(request, request_id, notice=f"restriction lifted on {len(lifted)} studies")


@router.post("/requests/{request_id}/erase", response_class=HTMLResponse)
def erase_studies(
    request: Request, principal: Dpo, request_id: RequestId, legal_obligation: Short = ""
) -> Response:
    return perform(
        request,
        lambda: erase(
            vault_of(request),
            request_id,
            actor=principal.actor,
            remote=remote_of(request),
            legal_obligation=legal_obligation or None,
        ),
        refused=partial(_detail, request, request_id),
        then=lambda outcome: _detail(request, request_id, notice=_erasure_notice(outcome)),
    )


def _erasure_notice(outcome: ErasureOutcome) -> str:
    refused = ", ".join(sorted(set(outcome.refused.values())))
    notice = f"{len(outcome.erased)} studies erased, {len(outcome.refused)} refused"
    return f"{notice} ({refused})" if refused else notice


@router.post("/requests/{request_id}/close")
def close(
    request: Request, principal: Dpo, request_id: RequestId, outcome: Short, note: Text = ""
) -> Response:
    return perform(
        request,
        lambda: dsr.close_request(
            vault_of(request),
            request_id,
            actor=principal.actor,
            remote=remote_of(request),
            outcome=outcome,
            note=note,
        ),
        refused=partial(_detail, request, request_id),
        then=lambda _: _done(request_id),
    )
