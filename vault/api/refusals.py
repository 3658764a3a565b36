"""Refused requests of identified callers, recorded in the access log.

A route that reads or changes something records its own outcome, refusals
included (an engineer's download of a study out of reach is
``study.download`` ``not-found``), and says so with :func:`mark_recorded`.
Every other refusal of a caller the guard identified is recorded here, once,
as ``request.refused``: a surgeon opening the DPO's pages, an access package
asked for before the requester's identity was checked, an erasure under a
legal hold. The record names the caller and their address, the refusal's
reason as its outcome, and in its detail the route's template, the method,
the status and the route's internal ids (``*_id`` parameters; never a UID).

Only refusals of access are recorded (403, 404, 409, 410): a form's bad
input is not an access. Requests from no one identified (no session, a bad
token) are not recorded, so scanners cannot fill the log; failed logins are
recorded by the login itself.
"""

from __future__ import annotations

from fastapi import Request

from vault.audit import DetailValue
from vault.auth.guard import caller_record
from vault.auth.permissions import Principal

REFUSAL_STATUSES = frozenset({403, 404, 409, 410})
ACTION = "request.refused"
_MAX_ID = 64


def mark_recorded(request: Request) -> None:
    """Say that the route has recorded this request's refusal itself."""
    request.state.refusal_recorded = True


def _detail(request: Request, status: int) -> dict[str, DetailValue]:
    route = request.scope.get("route")
    detail: dict[str, DetailValue] = {
        "route": str(getattr(route, "path", "unknown")),
        "method": request.method,
        "status": status,
    }
    for name, value in request.path_params.items():
        if name.endswith("_id") and isinstance(value, str) and len(value) <= _MAX_ID:
            detail[name] = value
    return detail


def record_refusal(request: Request, status: int, reason: str) -> None:
    """Record the refusal of ``request`` (``status``, ``reason``) unless it needs none.

    Not recorded: another status than :data:`REFUSAL_STATUSES`, no caller
    identified, or a refusal the route recorded itself.
    """
    caller: Principal | None = getattr(request.state, "caller", None)  # set by the guard
    if status not in REFUSAL_STATUSES or caller is None:
        return
    if getattr(request.state, "refusal_recorded", False):
        return
    record = caller_record(
        request, caller, ACTION, outcome=reason[:40], detail=_detail(request, status)
    )
    request.app.state.vault.audit.record(record)
    mark_recorded(request)
