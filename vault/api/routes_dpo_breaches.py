"""The data-protection officer's breach register pages.

Incidents are recorded from ``GET /dpo`` (``POST /dpo/breaches``); each has
its page with the 24-hour and 72-hour deadlines (overdue or late ones
flagged), the assessment (categories, numbers, cause, consequences,
measures, lessons), the notification decisions for the authority and the data
subjects (with the reason for an exemption), and the chronology. Every form
posts with the session's CSRF token and every change is made by
:mod:`vault.breaches`, which records it in the access log as the DPO;
opening an incident's page is recorded as ``breach.view``. A refused change
re-renders the page with its reason (4xx), closing included: an incident
whose cause, consequences, measures, lessons or exemption reasons are
missing is not closed. A refused new incident (no nature ticked, a detection
time in the future) answers ``/dpo`` with the reason and what was typed.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from vault import breaches
from vault.api.dpo_forms import Dpo, Short, Text, moment, perform, record_view, vault_of
from vault.api.pages import render
from vault.api.routes_dpo import overview_page
from vault.auth.guard import remote_of
from vault.breach_views import get_breach, texts_of
from vault.catalog.breaches import DATA_CATEGORIES, ENTRY_KINDS, NATURES
from vault.errors import InvalidInput

router = APIRouter(prefix="/dpo/breaches", include_in_schema=False)
BreachId = Annotated[str, Path(max_length=40)]
Count = Annotated[str, Form(max_length=12)]


def number(value: str) -> int | None:
    """A form's optional whole number (blank: not given).

    Raises:
        InvalidInput: not a whole number.
    """
    if not value.strip():
        return None
    if not value.strip().isdigit():
        raise InvalidInput("numbers of people and records are whole numbers", reason="count")
    return int(value.strip())


def _done(breach_id: str) -> Response:
    return RedirectResponse(f"/dpo/breaches/{breach_id}", status_code=303)


@router.post("")
def record(
    request: Request,
    principal: Dpo,
    detected: Short,
    description: Text,
    nature: Annotated[list[str] | None, Form()] = None,
    categories: Annotated[list[str] | None, Form()] = None,
    subjects: Count = "",
    records: Count = "",
    reference: Short = "",
) -> Response:
    typed = {
        "detected": detected,
        "description": description,
        "nature": nature or [],
        "categories": categories or [],
        "subjects": subjects,
        "records": records,
        "reference": reference,
    }
    return perform(
        request,
        lambda: breaches.record_breach(
            vault_of(request),
            detected_at=moment(detected, "detection time"),
            nature=nature or (),
            description=description,
            actor=principal.actor,
            remote=remote_of(request),
            categories=categories or (),
            subjects=number(subjects),
            records=number(records),
            reference=reference or None,
        ),
        refused=partial(overview_page, request, entered={"new-breach": typed}),
        then=lambda breach: _done(breach.id),
    )


@router.get("/{breach_id}", response_class=HTMLResponse)
def breach_page(request: Request, principal: Dpo, breach_id: BreachId) -> Response:
    page = _page(request, breach_id)
    record_view(request, principal, "breach", get_breach(vault_of(request), breach_id).breach.id)
    return page


def _page(
    request: Request, ref: str, *, status_code: int = 200, error: str | None = None
) -> Response:
    vault = vault_of(request)
    view = get_breach(vault, ref)
    texts, entries = texts_of(vault, view.breach)
    return render(
        request,
        "dpo_breach.html",
        status_code=status_code,
        error=error,
        view=view,
        b=view.breach,
        texts=texts,
        entries=entries,
        missing=breaches.missing_to_close(view.breach),
        natures=NATURES,
        categories=DATA_CATEGORIES,
        entry_kinds=ENTRY_KINDS,
        authority_exemptions=breaches.AUTHORITY_EXEMPTIONS,
        subject_exemptions=breaches.SUBJECT_EXEMPTIONS,
    )


@router.post("/{breach_id}/assessment")
def assess(
    request: Request,
    principal: Dpo,
    breach_id: BreachId,
    categories: Annotated[list[str] | None, Form()] = None,
    subjects: Count = "",
    records: Count = "",
    cause: Text = "",
    consequences: Text = "",
    measures: Text = "",
    lessons: Text = "",
) -> Response:
    texts = {"cause": cause, "consequences": consequences, "measures": measures, "lessons": lessons}
    return perform(
        request,
        lambda: breaches.update_assessment(
            vault_of(request),
            breach_id,
            actor=principal.actor,
            remote=remote_of(request),
            categories=categories,
            subjects=number(subjects),
            records=number(records),
            texts={field: text for field, text in texts.items() if text.strip()},
        ),
        refused=partial(_page, request, breach_id),
        then=lambda _: _done(breach_id),
    )


@router.post("/{breach_id}/entries")
def add_entry(
    request: Request,
    principal: Dpo,
    breach_id: BreachId,
    kind: Short,
    text: Text,
    at: Short = "",
) -> Response:
    return perform(
        request,
        lambda: breaches.add_entry(
            vault_of(request),
            breach_id,
            actor=principal.actor,
            remote=remote_of(request),
            kind=kind,
            text=text,
            at=moment(at, "time") if at.strip() else None,
        ),
        refused=partial(_page, request, breach_id),
        then=lambda _: _done(breach_id),
    )


@router.post("/{breach_id}/notify")
def notify(
    request: Request,
    principal: Dpo,
    breach_id: BreachId,
    party: Short,
    at: Short = "",
    exemption: Short = "",
    reason: Text = "",
    authority_reference: Short = "",
) -> Response:
    return perform(
        request,
        lambda: breaches.record_notification(
            vault_of(request),
            breach_id,
            actor=principal.actor,
            remote=remote_of(request),
            party=party,
            at=moment(at, "notification time") if at.strip() else None,
            exemption=exemption or None,
            reason=reason,
            authority_reference=authority_reference or None,
        ),
        refused=partial(_page, request, breach_id),
        then=lambda _: _done(breach_id),
    )


@router.post("/{breach_id}/close")
def close(request: Request, principal: Dpo, breach_id: BreachId) -> Response:
    return perform(
        request,
        lambda: breaches.close_breach(
            vault_of(request), breach_id, actor=principal.actor, remote=remote_of(request)
        ),
        refused=partial(_page, request, breach_id),
        then=lambda _: _done(breach_id),
    )
