"""What the data-protection officer's pages share: form fields, refusals, the view record.

:func:`perform` carries out a form's action and answers with the next page,
or with the form's page again showing the refusal and its status;
:func:`moment` reads a form's date; :func:`record_view` records that the DPO
opened a page where sealed notes are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Depends, Form, Request
from fastapi.responses import Response

from vault.api.refusals import record_refusal
from vault.auth.guard import caller_record, require
from vault.auth.permissions import Permission, Principal
from vault.core import Vault
from vault.errors import IdentityNotVerified, InvalidInput, RequestNotOpen, http_status

Dpo = Annotated[Principal, Depends(require(Permission.DSR_MANAGE, page=True))]
Text = Annotated[str, Form(max_length=4000)]
Short = Annotated[str, Form(max_length=200)]
REFUSALS = (InvalidInput, RequestNotOpen, IdentityNotVerified)
T = TypeVar("T")


def vault_of(request: Request) -> Vault:
    return request.app.state.vault


def perform(
    request: Request,
    action: Callable[[], T],
    refused: Callable[..., Response],
    then: Callable[[T], Response],
) -> Response:
    """Carry out a DPO's form: ``then(result)``, or on a refusal the page again with its reason.

    ``refused`` is called with ``status_code`` and ``error`` keywords; a
    refusal of access is recorded (:func:`vault.api.refusals.record_refusal`).
    """
    try:
        result = action()
    except REFUSALS as exc:
        record_refusal(request, http_status(exc), exc.reason)
        return refused(status_code=http_status(exc), error=str(exc))
    return then(result)


def moment(value: str, what: str) -> datetime:
    """A form's ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` value, as UTC.

    Raises:
        InvalidInput: not a date.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidInput(f"the {what} is not a date (YYYY-MM-DD)", reason="date") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def record_view(request: Request, principal: Principal, kind: str, object_id: str) -> None:
    """Record that the DPO read a request's or incident's page (its notes are opened there)."""
    record = caller_record(
        request, principal, f"{kind}.view", object_type=kind, object_id=object_id
    )
    vault_of(request).audit.record(record)
