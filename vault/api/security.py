"""HTTP hardening middleware: security headers and request body size limits.

:class:`SecurityHeaders` adds a strict Content-Security-Policy (no inline
script or style, no framing, no plugins), nosniff, no-referrer, HSTS when the
request came over TLS (or the deployment says TLS ends at a proxy), and
``Cache-Control: no-store`` on everything but static files.

:class:`BodyLimit` refuses a declared ``Content-Length`` over the limit with
413 before the app runs, and counts streamed bodies as they are read,
raising :class:`vault.errors.TooLarge` (413) once the limit is passed. Upload
paths get their own, larger limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vault.errors import TooLarge
from vault.settings import Settings

CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
HSTS = "max-age=63072000; includeSubDomains"
_STATIC_PREFIX = "/static/"


class SecurityHeaders:
    """Adds the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp, *, hsts_always: bool = False) -> None:
        self.app = app
        self.hsts_always = hsts_always

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k, v) for k, v in extra if k not in present]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if not scope["path"].startswith(_STATIC_PREFIX):
            headers.append((b"cache-control", b"no-store"))
        if self.hsts_always or scope.get("scheme") == "https":
            headers.append((b"strict-transport-security", HSTS.encode()))
        return headers


class BodyLimit:
    """Refuses request bodies over a size limit (see module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        overrides: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = tuple(overrides)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.overrides:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send)
            return
        await self.app(scope, _counting(receive, limit), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise TooLarge("the request body is too large")
        return message

    return counted


async def _refuse(send: Send) -> None:
    body = b'{"error":"too-large","detail":"the request body is too large"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the body limit and security headers to ``app`` (headers outermost)."""
    uploads = settings.limits.max_upload_bytes
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.auth.max_request_bytes,
        overrides=[(prefix, uploads) for prefix in settings.auth.upload_path_prefixes],
    )
    app.add_middleware(SecurityHeaders, hsts_always=settings.auth.hsts)
