"""What the engineers' routes (REST and DICOMweb) share: keys, audited streams, downloads.

:class:`AccessRecord` is the access-log record of one read (who, which
object, from where, the outcome and the bytes sent), written once when the
transfer ends, fails or is dropped. :func:`started` produces a stream's
first piece before any status is sent, so that early failures (a missing
key, a tampered first object) answer an error status instead of a cut body.
:func:`download_response` answers a download with a known length and strong
ETag: 304 for ``If-None-Match``, 206 for one satisfiable ``Range`` (honouring
``If-Range``), 416 for an unsatisfiable one, 200 otherwise. A ``HEAD`` gets the
same status and headers with no body, and no object is opened for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from crypto.errors import CryptoError
from vault.api.refusals import mark_recorded
from vault.audit import AuditRecord, DetailValue
from vault.auth.guard import remote_of, require
from vault.auth.permissions import Permission, Principal
from vault.core import Vault
from vault.downloads import CrcCache
from vault.errors import RangeNotSatisfiable, VaultError, http_status
from vault.http_ranges import ByteRange, not_modified, requested_range

Engineer = Annotated[Principal, Depends(require(Permission.PSEUDONYMISED_READ))]
ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown, or not in one of the caller's cases"},
    409: {"description": "the pseudonymised study is not finished; its state is given"},
    410: {"description": "the study's data key was destroyed (erased)"},
}
RANGE_ERRORS: dict[int | str, dict[str, str]] = {
    206: {"description": "the one byte range asked for (Range, honouring If-Range)"},
    304: {"description": "If-None-Match names the current ETag"},
    416: {"description": "the range lies past the end; Content-Range gives the length"},
    **ERRORS,
}
StreamFor = Callable[[ByteRange | None], Iterator[bytes]]


def vault_of(request: Request) -> Vault:
    return request.app.state.vault


def crc_cache(request: Request) -> CrcCache:
    """The app's cache of member CRC-32s (by plaintext SHA-256), made on first use."""
    cache: CrcCache | None = getattr(request.app.state, "crc_cache", None)
    if cache is None:
        cache = request.app.state.crc_cache = CrcCache()
    return cache


class AccessRecord:
    """The access-log record of one read, written by calling it with the outcome."""

    def __init__(
        self, request: Request, principal: Principal, action: str, kind: str, oid: str | None
    ) -> None:
        self._vault, self._remote = vault_of(request), remote_of(request)
        self._request = request
        self._actor, self._action, self._kind = principal.actor, action, kind
        self.object_id = oid
        self.detail: dict[str, DetailValue] = {}

    def __call__(self, outcome: str, sent: int = 0) -> None:
        record = AuditRecord(
            self._actor,
            self._action,
            outcome=outcome,
            object_type=self._kind,
            object_id=self.object_id,
            remote=self._remote,
            detail={"bytes": sent, **self.detail},
        )
        self._vault.audit.record(record)

    def refused(self, exc: VaultError | CryptoError) -> None:
        self(exc.reason)
        mark_recorded(self._request)


def _audited(first: bytes, rest: Iterator[bytes], finish: AccessRecord) -> Iterator[bytes]:
    """``first`` then ``rest``, recording the outcome when the stream ends or is dropped."""
    sent, outcome = 0, "incomplete"
    try:
        if first:
            yield first
            sent += len(first)
        for piece in rest:
            yield piece
            sent += len(piece)
        outcome = "success"
    except (CryptoError, VaultError) as exc:
        outcome = f"failure:{exc.reason}"
        raise
    finally:
        finish(outcome, sent)


def started(stream: Iterator[bytes], finish: AccessRecord) -> Iterator[bytes]:
    """Produce the first piece now, so that early failures answer an error status."""
    try:
        first = next(stream, b"")
    except (CryptoError, VaultError) as exc:
        finish(f"failure:{exc.reason}")
        raise
    return _audited(first, stream, finish)


def _unsatisfiable(exc: RangeNotSatisfiable, etag: str) -> JSONResponse:
    headers = {"Content-Range": f"bytes */{exc.size}", "ETag": etag}
    body = {"error": exc.reason, "detail": str(exc)}
    return JSONResponse(body, status_code=http_status(exc), headers=headers)


def download_response(
    request: Request,
    finish: AccessRecord,
    stream_for: StreamFor,
    *,
    size: int,
    etag: str,
    media_type: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """The download answer for a representation of ``size`` bytes (see module docstring)."""
    common = {"ETag": etag, "Accept-Ranges": "bytes", **(headers or {})}
    if not_modified(request.headers, etag):
        finish("not-modified")
        return Response(status_code=304, headers=common)
    try:
        byte_range = requested_range(request.headers, size, etag)
    except RangeNotSatisfiable as exc:
        finish.refused(exc)
        return _unsatisfiable(exc, etag)
    if byte_range is not None:
        finish.detail["from"] = byte_range.start
        common["Content-Range"] = byte_range.content_range(size)
    common["Content-Length"] = str(byte_range.length if byte_range else size)
    status = 206 if byte_range else 200
    if request.method == "HEAD":
        finish("headers-only")
        return Response(status_code=status, media_type=media_type, headers=common)
    stream = started(stream_for(byte_range), finish)
    return StreamingResponse(stream, status_code=status, media_type=media_type, headers=common)
