"""``GET /metrics``: the operators' figures for Prometheus (:mod:`vault.metrics`).

Open to administrators: a session, or a bearer token of scope ``metrics``,
which reads this route and nothing else (``dicom-vault admin metrics-token``
makes one for a scraper). The figures are counts of the catalog's states,
never health data; still not public, because they tell how much a site holds
and how busy it is.

A scrape is not recorded in the access log. Prometheus asks every 15 to 60
seconds, from every replica: thousands of identical records a day, kept 12
months, would bury the reads of health data the log exists to show, while
saying nothing about any person or study. What is recorded is who can
scrape: creating and revoking a ``metrics`` token (``token.create``,
``token.revoke``); the token's ``last_used_at`` shows that it is in use.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from vault.auth.guard import require
from vault.auth.permissions import Permission, Principal
from vault.metrics import CONTENT_TYPE, collect, exposition

router = APIRouter(tags=["service"])
Operator = Annotated[Principal, Depends(require(Permission.METRICS))]


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request, _operator: Operator) -> Response:
    """The figures in the Prometheus text exposition format 0.0.4."""
    figures = exposition(collect(request.app.state.vault))
    return Response(figures, media_type=CONTENT_TYPE)
