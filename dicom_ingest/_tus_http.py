"""The HTTP side of tus 1.0.0 (https://tus.io/protocols/resumable-upload): headers in and out.

:class:`TusRoute` makes every response of a tus route carry
``Tus-Resumable`` and answers project errors itself (with ``Tus-Version`` on
a 412), as ``{"error", "detail"}`` with the status of :mod:`vault.errors`.
The dependencies refuse, before anything else runs, a request without
``Tus-Resumable: 1.0.0`` and a body that is not
``application/offset+octet-stream`` (so no other code, the CSRF check's
form fallback included, ever parses a streamed body). The parsers read
``Upload-Length``, ``Upload-Offset``, the body length and ``Upload-Metadata``.
The dependencies are coroutines: FastAPI would run plain functions in a
worker thread, one thread switch each per request.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from crypto.errors import CryptoError
from dicom_ingest._upload_status import FileStatus
from vault.errors import (
    BadRequest,
    ProtocolVersionUnsupported,
    UnsupportedMediaType,
    VaultError,
    http_status,
)

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination"
OFFSET_STREAM = "application/offset+octet-stream"


def error_json(exc: VaultError | CryptoError, headers: dict[str, str] | None = None) -> Response:
    """``{"error": reason, "detail": plain words}`` with the error's HTTP status."""
    body = {"error": exc.reason, "detail": str(exc)}
    return JSONResponse(body, status_code=http_status(exc), headers=headers)


class TusRoute(APIRoute):
    """A tus route: project errors answered here, ``Tus-Resumable`` on every response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except (VaultError, CryptoError) as exc:
                response = error_json(exc)
                if isinstance(exc, ProtocolVersionUnsupported):
                    response.headers["Tus-Version"] = TUS_VERSION
            response.headers["Tus-Resumable"] = TUS_VERSION
            return response

        return tus_handler


async def tus_version(request: Request) -> None:
    """Dependency: the request speaks tus 1.0.0."""
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise ProtocolVersionUnsupported("this service speaks tus 1.0.0 (Tus-Resumable header)")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def patch_body(request: Request) -> None:
    """Dependency: a PATCH body is ``application/offset+octet-stream``."""
    if _media_type(request) != OFFSET_STREAM:
        raise UnsupportedMediaType(f"send the bytes as {OFFSET_STREAM}")


async def creation_body(request: Request) -> None:
    """Dependency: a creating POST has no body type, or the tus one."""
    if _media_type(request) not in ("", OFFSET_STREAM):
        raise UnsupportedMediaType(f"send the bytes as {OFFSET_STREAM}")


def header_number(request: Request, name: str) -> int:
    """The non-negative whole number in header ``name``. Raises BadRequest."""
    value = request.headers.get(name)
    if value is None or not value.isdigit():
        raise BadRequest(f"the {name} header must be a non-negative whole number")
    return int(value)


def body_length(request: Request) -> int | None:
    """The declared body length; None for a chunked body of unknown length."""
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return None
    if request.headers.get("content-length") is None:
        return 0
    return header_number(request, "content-length")


def upload_metadata(header: str | None) -> dict[str, str]:
    """The Upload-Metadata pairs (values base64); names are read, never kept."""
    pairs: dict[str, str] = {}
    for item in (header or "").split(","):
        key, _, value = item.strip().partition(" ")
        if not key:
            continue
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("Upload-Metadata values must be base64") from exc
        pairs[key] = decoded.decode("utf-8", errors="replace")
    return pairs


def progress_headers(status: FileStatus) -> dict[str, str]:
    """Upload-Offset and Upload-Length, and X-Vault-Outcome once the file is finished."""
    headers = {"Upload-Offset": str(status.offset), "Upload-Length": str(status.length)}
    if status.finished:
        headers["X-Vault-Outcome"] = status.state
    return headers
