"""The upload API: upload sessions as JSON, files over the tus 1.0.0 resumable protocol.

Transport adaptation only; what an upload is and does lives in
:mod:`dicom_ingest.uploads`. Routes (all need :attr:`Permission.UPLOAD`; an
upload or case out of reach answers 404):

- ``POST /api/uploads`` ``{"case_id"}``, ``GET /api/uploads?case_id=``,
  ``GET /api/uploads/{upload_id}``, ``POST /api/uploads/{upload_id}/complete``;
- tus core, creation, creation-with-upload and termination at
  ``/api/uploads/{upload_id}/files`` (OPTIONS, POST) and ``.../files/{file_id}``
  (HEAD, PATCH, DELETE), every response carrying ``Tus-Resumable``;
- ``GET .../files/{file_id}/result``: what became of a file.

Reads of upload state are recorded (``upload.list``, ``upload.read``, internal
ids and counts only); the tus HEAD and OPTIONS probes are not.

Request bodies are never read whole: :class:`dicom_ingest._upload_pipe.BodyPipe`
hands them chunk by chunk to the ingest code in a worker thread. Bodies must
be ``application/offset+octet-stream``; any other type is refused before the
caller is even identified, so that the CSRF check never parses a streamed
body as a form. Errors answer ``{"error", "detail"}`` with the status of
:mod:`vault.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from crypto.errors import CryptoError
from dicom_ingest._tus_http import (
    TUS_EXTENSIONS,
    TUS_VERSION,
    TusRoute,
    body_length,
    creation_body,
    error_json,
    header_number,
    patch_body,
    progress_headers,
    tus_version,
    upload_metadata,
)
from dicom_ingest._upload_locks import FileLocks
from dicom_ingest._upload_pipe import BodyCut, BodyPipe
from dicom_ingest.uploads import FileStatus, Uploads, UploadStatus, file_kind
from vault.auth.guard import caller_record, remote_of, require
from vault.auth.permissions import Permission, Principal
from vault.errors import BadRequest, VaultError

Uploader = Annotated[Principal, Depends(require(Permission.UPLOAD))]
Id = Annotated[str, Path(max_length=32)]


router = APIRouter(prefix="/api/uploads", tags=["uploads"])
files = APIRouter(route_class=TusRoute)


# --- shared parts ------------------------------------------------------------


def _uploads(request: Request) -> Uploads:
    """The app's :class:`Uploads`, built on first use for the app's vault."""
    state = request.app.state
    uploads: Uploads | None = getattr(state, "uploads", None)
    if uploads is None or uploads.vault is not state.vault:
        uploads = Uploads(state.vault, getattr(state, "settle_hooks", None))
        state.uploads = uploads
    return uploads


def _locks(request: Request) -> FileLocks:
    locks: FileLocks | None = getattr(request.app.state, "upload_locks", None)
    if locks is None:
        locks = request.app.state.upload_locks = FileLocks()
    return locks


def _record_read(
    request: Request, principal: Principal, action: str, kind: str, oid: str, **detail: str | int
) -> None:
    """Record that the caller read upload state (internal ids and counts only)."""
    record = caller_record(
        request, principal, action, object_type=kind, object_id=oid, detail=detail
    )
    _uploads(request).vault.audit.record(record)


def _file_url(upload_id: str, file_id: str) -> str:
    return f"/api/uploads/{upload_id}/files/{file_id}"


# --- receiving bytes ----------------------------------------------------------


Work = Callable[..., FileStatus]


async def _call(work: Callable[[], FileStatus]) -> FileStatus | Exception:
    try:
        return await anyio.to_thread.run_sync(work)
    except Exception as exc:  # noqa: BLE001 (handed back to the caller, who decides)
        return exc


async def _stream(request: Request, work: Work, file_id: str | None) -> FileStatus | Exception:
    """Run ``work(body=..., body_length=...)`` in a worker thread on the streamed body.

    ``file_id``: the file to hold for the request (none for a file being created).
    """
    declared = body_length(request)
    settings = _uploads(request).vault.settings
    limit = settings.limits.max_upload_bytes if declared is None else declared
    pipe = BodyPipe(expected=declared, limit=limit, start_at=settings.uploads.block_bytes)
    holding = _locks(request).hold(file_id, pipe.interrupt) if file_id else nullcontext()
    async with holding, anyio.create_task_group() as group:
        group.start_soon(pipe.fill, request.stream())
        await pipe.filled()
        result = await _call(partial(work, body=pipe, body_length=declared))
        pipe.stop_reading()
    return result


async def _answer(
    request: Request, result: FileStatus | Exception, principal: Principal, upload_id: str
) -> Response:
    """The tus answer to a request that sent bytes: 204 or 201, or the error."""
    created = request.method == "POST"
    if isinstance(result, FileStatus):
        headers = progress_headers(result)
        if created:
            headers["Location"] = _file_url(upload_id, result.file_id)
        if isinstance(result.error, VaultError | CryptoError):
            return error_json(result.error, headers)
        return Response(status_code=201 if created else 204, headers=headers)
    if isinstance(result, BodyCut):
        result = BadRequest("the request body ended before its declared length")
    if not isinstance(result, VaultError | CryptoError):
        raise result
    headers = {}
    file_id = request.path_params.get("file_id")
    if file_id:
        uploads = _uploads(request)
        try:
            current = await run_in_threadpool(uploads.file_status, principal, upload_id, file_id)
            headers = progress_headers(current)
        except VaultError:
            pass  # the file itself is out of reach: no progress to tell
    return error_json(result, headers)


# --- tus routes ---------------------------------------------------------------


@files.options("/{upload_id}/files", status_code=204)
async def tus_options(request: Request, upload_id: Id, principal: Uploader) -> Response:
    """The tus capabilities of this server (version, extensions, maximum size)."""
    limit = _uploads(request).vault.settings.limits.max_upload_bytes
    headers = {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(limit),
    }
    return Response(status_code=204, headers=headers)


@files.post(
    "/{upload_id}/files",
    status_code=201,
    dependencies=[Depends(tus_version), Depends(creation_body)],
)
async def create_file(request: Request, upload_id: Id, principal: Uploader) -> Response:
    """Create a file of ``Upload-Length`` bytes (tus creation); with a body, take it at once.

    ``Upload-Metadata``: ``kind`` (``dicom``, ``zip`` or ``dicomdir``); a
    ``filename`` is accepted to tell DICOMDIR files and OS junk apart, never stored.
    """
    length = header_number(request, "upload-length")
    metadata = upload_metadata(request.headers.get("upload-metadata"))
    kind = file_kind(metadata.get("kind"), metadata.get("filename"))
    uploads = _uploads(request)
    if body_length(request) != 0 or length == 0:
        remote = remote_of(request)
        work = partial(uploads.add_file_and_receive, principal, upload_id, length, kind)
        result = await _stream(request, partial(work, remote=remote), None)
        return await _answer(request, result, principal, upload_id)
    status = await run_in_threadpool(uploads.add_file, principal, upload_id, length, kind)
    headers = {"Location": _file_url(upload_id, status.file_id), "Upload-Offset": "0"}
    return Response(status_code=201, headers=headers)


@files.head("/{upload_id}/files/{file_id}", dependencies=[Depends(tus_version)])
async def file_offset(
    request: Request, upload_id: Id, file_id: Id, principal: Uploader
) -> Response:
    """Where the file's bytes end (tus HEAD); a newer request stops an older one."""
    uploads = _uploads(request)
    async with _locks(request).hold(file_id):
        status = await run_in_threadpool(uploads.file_status, principal, upload_id, file_id)
    headers = progress_headers(status) | {"Cache-Control": "no-store"}
    return Response(status_code=200, headers=headers)


@files.patch(
    "/{upload_id}/files/{file_id}",
    status_code=204,
    dependencies=[Depends(tus_version), Depends(patch_body)],
)
async def append_bytes(
    request: Request, upload_id: Id, file_id: Id, principal: Uploader
) -> Response:
    """Append the body at ``Upload-Offset`` (409 if the file's bytes end elsewhere)."""
    offset = header_number(request, "upload-offset")
    uploads = _uploads(request)
    work = partial(uploads.receive, principal, upload_id, file_id, offset=offset)
    result = await _stream(request, partial(work, remote=remote_of(request)), file_id)
    return await _answer(request, result, principal, upload_id)


@files.delete("/{upload_id}/files/{file_id}", status_code=204, dependencies=[Depends(tus_version)])
async def terminate_file(
    request: Request, upload_id: Id, file_id: Id, principal: Uploader
) -> Response:
    """Withdraw a file still arriving (tus termination): what came is dropped."""
    uploads = _uploads(request)
    remote = remote_of(request)
    async with _locks(request).hold(file_id):
        await run_in_threadpool(uploads.terminate, principal, upload_id, file_id, remote)
    return Response(status_code=204)


# --- JSON routes --------------------------------------------------------------


class NewUpload(BaseModel):
    case_id: str = Field(max_length=32)


class UploadOut(BaseModel):
    upload_id: str
    case_id: str
    files_url: str
    state: str
    files: dict[str, int]
    bytes_received: int


class Refusal(BaseModel):
    entry: int | None
    error: str
    detail: str


class FileResult(BaseModel):
    state: str
    offset: int
    length: int
    refused: list[Refusal]
    stored: int
    duplicates: int


class Completed(BaseModel):
    state: str
    studies: list[str]


def _upload_out(status: UploadStatus) -> UploadOut:
    return UploadOut(
        upload_id=status.upload_id,
        case_id=status.case_id,
        files_url=f"/api/uploads/{status.upload_id}/files",
        state=status.state,
        files=status.files,
        bytes_received=status.bytes_received,
    )


@router.post("", status_code=201, response_model=UploadOut)
def create_upload(request: Request, new: NewUpload, principal: Uploader) -> UploadOut:
    """Open an upload (a batch of files) for a case within the caller's reach."""
    status = _uploads(request).create(principal, new.case_id, remote_of(request))
    return _upload_out(status)


@router.get("", response_model=list[UploadOut])
def list_uploads(
    request: Request, principal: Uploader, case_id: Annotated[str, Query(max_length=32)]
) -> list[UploadOut]:
    """The caller's open uploads for a case (a reloaded page continues one)."""
    found = _uploads(request).list_open(principal, case_id)
    _record_read(request, principal, "upload.list", "case", case_id, uploads=len(found))
    return [_upload_out(s) for s in found]


@router.get("/{upload_id}", response_model=UploadOut)
def get_upload(request: Request, upload_id: Id, principal: Uploader) -> UploadOut:
    """An upload's state and its files counted by outcome."""
    status = _uploads(request).status(principal, upload_id)
    _record_read(request, principal, "upload.read", "upload", upload_id)
    return _upload_out(status)


@router.post("/{upload_id}/complete", response_model=Completed)
def complete_upload(request: Request, upload_id: Id, principal: Uploader) -> Completed:
    """Mark the upload complete: its studies settle and go to de-identification."""
    studies = _uploads(request).complete(principal, upload_id, remote_of(request))
    return Completed(state="complete", studies=studies)


@router.get("/{upload_id}/files/{file_id}/result", response_model=FileResult)
def file_result(request: Request, upload_id: Id, file_id: Id, principal: Uploader) -> FileResult:
    """What became of a file: its state, and each refusal with its reason."""
    status = _uploads(request).file_status(principal, upload_id, file_id)
    _record_read(request, principal, "upload.read", "upload", upload_id, file=file_id)
    return FileResult(
        state=status.state,
        offset=status.offset,
        length=status.length,
        refused=[Refusal.model_validate(item) for item in status.refused],
        stored=status.stored,
        duplicates=status.duplicates,
    )


router.include_router(files)
