"""Refusals answered to a browser's page navigation: a small HTML page, not JSON.

API clients get a refusal as JSON (:mod:`vault.api.app`, and FastAPI's own
answer to an unknown path). A person who follows a link or types an address
gets the same status as ``error.html`` instead, in the site's layout: a
heading, the refusal in plain words and a link home. A request is such a
navigation (:func:`wants_page`) when it is a ``GET`` outside the API paths
(:data:`API_PREFIXES`) whose ``Accept`` prefers ``text/html`` to
``application/json``; ``fetch`` and tools, which send ``*/*`` or ask for
JSON, keep the JSON.

The page shows a refusal's own message only below 500: those are written for
the person and never carry PHI (:mod:`vault.errors`); a server error gets a
fixed sentence. Unknown paths get a fixed sentence too.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.responses import HTMLResponse

from vault.api.pages import render

API_PREFIXES = ("/api/", "/dicomweb/", "/metrics", "/healthz", "/readyz", "/openapi.json")
HTML, JSON = "text/html", "application/json"
_HEADINGS = {
    401: "Please log in",
    403: "This page is not open to you",
    404: "Page not found",
    409: "Not possible now",
    410: "No longer available",
    429: "Too many attempts",
}
_SERVER_ERROR = "The service could not answer. Please try again in a few minutes."
_NO_SUCH_PAGE = "There is no page at this address."


def _ranges(accept: str) -> list[tuple[str, float]]:
    """The media ranges of an ``Accept`` header, each with its q-value."""
    ranges = []
    for part in accept.split(","):
        media, *parameters = (field.strip() for field in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _quality(ranges: list[tuple[str, float]], media: str) -> float:
    """The q-value of ``media``: that of the most specific range matching it."""
    patterns = (media, media.split("/")[0] + "/*", "*/*")
    for pattern in patterns:
        found = [quality for name, quality in ranges if name == pattern]
        if found:
            return max(found)
    return 0.0


def wants_page(request: Request) -> bool:
    """Whether ``request`` is a browser's page navigation (see module docstring)."""
    if request.method != "GET" or request.url.path.startswith(API_PREFIXES):
        return False
    ranges = _ranges(request.headers.get("accept", ""))
    return _quality(ranges, HTML) > _quality(ranges, JSON)


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def error_page(request: Request, status: int, message: str | None) -> HTMLResponse:
    """``error.html`` with ``status``: its heading, and ``message`` (a refusal's
    own, PHI-free) or a fixed sentence when there is none or ``status`` is 5xx."""
    reason = _NO_SUCH_PAGE if message is None else _sentence(message)
    if status >= 500:
        reason = _SERVER_ERROR
    heading = _HEADINGS.get(status, HTTPStatus(status).phrase)
    return render(
        request, "error.html", status_code=status, heading=heading, reason=reason, status=status
    )
