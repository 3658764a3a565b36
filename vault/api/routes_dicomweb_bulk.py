"""DICOMweb frames and bulk data (PS3.18 10.4) under ``/dicomweb``, for one instance.

The same callers, reach and refusals as :mod:`vault.api.routes_dicomweb`
(an instance out of reach is 404, exactly as an unknown one), and the same
decrypting opener: frames and pixel data are read forward from the
pseudonymised object (:mod:`vault.frames`), other bulk values from its
header. Bodies are ``multipart/related``, streamed without a Content-Length
(encapsulated frames' lengths are known only once read); the framing and
media types are :mod:`vault.wado_bulk`'s. Each read is recorded in the
access log (``dicomweb.frames``, ``dicomweb.bulkdata``) with its outcome
and the bytes sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from crypto.errors import CryptoError
from vault.api.engineer_access import ERRORS, AccessRecord, Engineer, started, vault_of
from vault.api.routes_dicomweb import Uid, found_instances
from vault.auth.permissions import Principal
from vault.dicom_headers import header_of
from vault.downloads import MemberOpener, opener
from vault.errors import VaultError
from vault.frames import FrameReader
from vault.pixel_data import PIXEL_TAGS
from vault.pseudonymised_index import InstanceInfo
from vault.wado_bulk import (
    OCTET,
    PartStream,
    bulk_value,
    check_octet_accept,
    frame_media,
    frame_numbers,
    part_type,
)

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
_PARTS = {
    200: {"content": {'multipart/related; type="application/octet-stream"': {}}},
    400: {"description": "a malformed frame list, or frames beyond the instance's"},
    406: {"description": "the Accept header asks for a type or syntax that needs transcoding"},
    **ERRORS,
}
FrameList = Annotated[str, Path(max_length=4096)]
AttributePath = Annotated[
    str, Path(max_length=200, pattern=r"^[0-9A-Fa-f]{8}(\.[0-9]{1,6}\.[0-9A-Fa-f]{8}){0,8}$")
]
Parts = Iterator[tuple[str, Iterator[bytes]]]


def _one_instance(
    request: Request, principal: Principal, finish: AccessRecord, uids: tuple[str, str, str]
) -> tuple[InstanceInfo, MemberOpener]:
    (info,) = found_instances(request, principal, finish, uids)
    return info, opener(vault_of(request), {info.stored.key_id})


def _frame_parts(reader: FrameReader, numbers: list[int], media: str) -> Parts:
    kind = part_type(media, reader.syntax)
    return ((kind, data) for _, data in reader.frames(numbers))


def _frames_body(reader: FrameReader, accept: str | None, text: str) -> tuple[PartStream, Parts]:
    """The frames ``text`` names, as parts; the reader is closed on a refusal."""
    try:
        numbers = frame_numbers(text, reader.count)
        media = frame_media(accept, reader.syntax)
    except VaultError:
        reader.close()
        raise
    return PartStream(media), _frame_parts(reader, numbers, media)


def _frames(
    request: Request, principal: Principal, uids: tuple[str, str, str], text: str
) -> Response:
    finish = AccessRecord(request, principal, "dicomweb.frames", "pseudonymised-instance", None)
    try:
        info, open_member = _one_instance(request, principal, finish, uids)
        reader = FrameReader(open_member, info.stored)
        body, parts = _frames_body(reader, request.headers.get("accept"), text)
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    finish.detail["frames"] = len(text.split(","))
    stream = started(body.body(parts), finish)
    return StreamingResponse(stream, media_type=body.content_type)


def _bulk_body(
    info: InstanceInfo, open_member: MemberOpener, accept: str | None, path: str
) -> tuple[PartStream, Parts]:
    """The bulk data at ``path``: pixel data read forward, other values from the header."""
    if len(path) > 8 or int(path, 16) not in PIXEL_TAGS:
        check_octet_accept(accept)
        value = bulk_value(header_of(open_member, info.stored), path)
        return PartStream(OCTET), iter([(OCTET, iter([value]))])
    reader = FrameReader(open_member, info.stored, tag=int(path, 16))
    if reader.encapsulated:
        return _frames_body(reader, accept, ",".join(map(str, range(1, reader.count + 1))))
    try:
        check_octet_accept(accept)
    except VaultError:
        reader.close()
        raise
    return PartStream(OCTET), iter([(OCTET, reader.value())])


def _bulkdata(
    request: Request, principal: Principal, uids: tuple[str, str, str], path: str
) -> Response:
    finish = AccessRecord(request, principal, "dicomweb.bulkdata", "pseudonymised-instance", None)
    finish.detail["attribute"] = path  # tags and item numbers only
    try:
        info, open_member = _one_instance(request, principal, finish, uids)
        body, parts = _bulk_body(info, open_member, request.headers.get("accept"), path)
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    stream = started(body.body(parts), finish)
    return StreamingResponse(stream, media_type=body.content_type)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    response_class=StreamingResponse,
    responses=_PARTS,
)
def retrieve_frames(
    request: Request, principal: Engineer, study: Uid, series: Uid, instance: Uid, frames: FrameList
) -> Response:
    """WADO-RS frames: the listed frames' pixel bytes as stored, one part each, in list order."""
    return _frames(request, principal, (study, series, instance), frames)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/bulkdata/{attribute}",
    response_class=StreamingResponse,
    responses=_PARTS,
)
def retrieve_bulkdata(
    request: Request,
    principal: Engineer,
    study: Uid,
    series: Uid,
    instance: Uid,
    attribute: AttributePath,
) -> Response:
    """WADO-RS bulk data: the value a metadata BulkDataURI names (pixel data per frame if
    encapsulated)."""
    return _bulkdata(request, principal, (study, series, instance), attribute.upper())
