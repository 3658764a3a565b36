"""Server-rendered pages: the Jinja2 templates and the one render helper.

Templates autoescape everything; pages load only the local stylesheet and
scripts under ``/static`` (the Content-Security-Policy forbids inline ones).
Forms of a logged-in session carry its CSRF token as ``csrf_token``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from vault.auth.guard import session_cookie
from vault.auth.sessions import csrf_token

TEMPLATES = Jinja2Templates(directory=Path(__file__).with_name("templates"))
STATIC_DIR = Path(__file__).with_name("static")


def render(request: Request, name: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Page ``name`` rendered with ``context`` and the session's CSRF token."""
    cookie = session_cookie(request)
    context.setdefault("csrf", csrf_token(cookie) if cookie else "")
    context.setdefault("principal", getattr(request.state, "principal", None))
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)
