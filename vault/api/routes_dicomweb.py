"""DICOMweb (PS3.18) under ``/dicomweb``: QIDO-RS and WADO-RS over pseudonymised data only.

The same callers and the same reach as the engineers' REST API
(``pseudonymised:read``, cases assigned, tokens bound to a case): a study
out of reach is not found by searches and answers 404 to retrievals, one
still being de-identified answers 409 with its state, quarantined instances
are never listed or served. Paths name pseudonymised UIDs; no route reads an
original object. Searches answer ``application/dicom+json`` (204 when nothing
matches); retrievals ``multipart/related; type="application/dicom"`` (the
stored bytes, streamed, exact Content-Length); metadata the headers with
BulkDataURIs for pixel data and large binary values; frames and bulk data
``multipart/related`` parts as stored (:mod:`vault.wado_bulk`). Every search
and read is recorded in the access log with its outcome.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse

from crypto.errors import CryptoError
from vault.api.engineer_access import ERRORS, AccessRecord, Engineer, started, vault_of
from vault.auth.permissions import Principal
from vault.dicomweb import metadata_stream, retrieval, search
from vault.downloads import opener
from vault.errors import VaultError
from vault.pseudonymised_index import InstanceInfo
from vault.qido import Level, parse_search
from vault.wado import Multipart, Part, check_accept

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])
Uid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]
DICOM_JSON = "application/dicom+json"
_SEARCH = {
    200: {"content": {DICOM_JSON: {}}},
    204: {"description": "no match (PS3.18 8.3.4.4.1): an empty body"},
    422: {"description": "an unknown attribute"},
}
_RETRIEVE = {
    200: {"content": {'multipart/related; type="application/dicom"': {}}},
    406: {"description": "the Accept header excludes the stored transfer syntax"},
    **ERRORS,
}
_METADATA = {200: {"content": {DICOM_JSON: {}}}, **ERRORS}


def dicomweb_base(request: Request) -> str:
    """The DICOMweb root URL: ``api.public_url`` when set, else the request's own."""
    public = vault_of(request).settings.api.public_url
    return f"{(public or str(request.base_url)).rstrip('/')}{router.prefix}"


def _warnings(ignored: tuple[str, ...], truncated: bool) -> dict[str, str]:
    warnings = []
    if ignored:
        keys = ", ".join(ignored)
        warnings.append(f'299 dicom-vault "The following query keys are not supported: {keys}"')
    if truncated:
        warnings.append('299 dicom-vault "There are additional results that can be requested"')
    return {"Warning": ", ".join(warnings)} if warnings else {}


def _search(request: Request, principal: Principal, level: Level, **scope: str) -> Response:
    finish = AccessRecord(request, principal, "dicomweb.search", "query", None)
    finish.detail["level"] = level.value
    try:
        query = parse_search(level, request.query_params.multi_items(), **scope)
        found = search(vault_of(request), principal, query, dicomweb_base(request))
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    finish.detail["results"] = len(found.results)
    finish("success")
    headers = _warnings(query.ignored, found.truncated)
    if not found.results:  # PS3.18 8.3.4.4.1: no match is 204 with an empty body
        return Response(status_code=204, headers=headers)
    body = json.dumps(found.results, separators=(",", ":")).encode()
    return Response(body, media_type=DICOM_JSON, headers=headers)


def found_instances(
    request: Request, principal: Principal, finish: AccessRecord, uids: tuple[str, str, str]
) -> list[InstanceInfo]:
    """The served instances the path names, the access record told which object it is.

    Raises:
        NotFound: unknown or out of reach (the same answer for both).
        NotReady: the study is still being de-identified.
    """
    study, instances = retrieval(vault_of(request), principal, *uids)
    finish.object_id = instances[0].id if uids[2] else study.id
    finish.detail["instances"] = len(instances)
    return instances


def _kind(sop_uid: str) -> str:
    return "pseudonymised-instance" if sop_uid else "pseudonymised-study"


def _retrieve(request: Request, principal: Principal, *uids: str) -> Response:
    study_uid, series_uid, sop_uid = (*uids, "", "")[:3]
    finish = AccessRecord(request, principal, "dicomweb.retrieve", _kind(sop_uid), None)
    try:
        instances = found_instances(request, principal, finish, (study_uid, series_uid, sop_uid))
        check_accept(request.headers.get("accept"), {i.transfer_syntax_uid for i in instances})
        open_member = opener(vault_of(request), {i.stored.key_id for i in instances})
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    body = Multipart([Part(info.stored, info.transfer_syntax_uid) for info in instances])
    stream = started(body.stream(open_member), finish)
    headers = {"Content-Length": str(body.size)}
    return StreamingResponse(stream, media_type=body.content_type, headers=headers)


def _metadata(request: Request, principal: Principal, *uids: str) -> Response:
    study_uid, series_uid, sop_uid = (*uids, "", "")[:3]
    finish = AccessRecord(request, principal, "dicomweb.metadata", _kind(sop_uid), None)
    try:
        instances = found_instances(request, principal, finish, (study_uid, series_uid, sop_uid))
        open_member = opener(vault_of(request), {i.stored.key_id for i in instances})
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    stream = started(metadata_stream(instances, open_member, dicomweb_base(request)), finish)
    return StreamingResponse(stream, media_type=DICOM_JSON)


# --- QIDO-RS ------------------------------------------------------------------


@router.get("/studies", responses=_SEARCH)
def search_studies(request: Request, principal: Engineer) -> Response:
    """QIDO-RS: the finished pseudonymised studies of the caller's cases."""
    return _search(request, principal, Level.STUDY)


@router.get("/series", responses=_SEARCH)
def search_all_series(request: Request, principal: Engineer) -> Response:
    """QIDO-RS: series of every study within reach."""
    return _search(request, principal, Level.SERIES)


@router.get("/instances", responses=_SEARCH)
def search_all_instances(request: Request, principal: Engineer) -> Response:
    """QIDO-RS: instances of every study within reach."""
    return _search(request, principal, Level.INSTANCE)


@router.get("/studies/{study}/series", responses=_SEARCH)
def search_series(request: Request, principal: Engineer, study: Uid) -> Response:
    """QIDO-RS: the series of one study."""
    return _search(request, principal, Level.SERIES, StudyInstanceUID=study)


@router.get("/studies/{study}/instances", responses=_SEARCH)
def search_study_instances(request: Request, principal: Engineer, study: Uid) -> Response:
    """QIDO-RS: the instances of one study."""
    return _search(request, principal, Level.INSTANCE, StudyInstanceUID=study)


@router.get("/studies/{study}/series/{series}/instances", responses=_SEARCH)
def search_instances(request: Request, principal: Engineer, study: Uid, series: Uid) -> Response:
    """QIDO-RS: the instances of one series."""
    scope = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return _search(request, principal, Level.INSTANCE, **scope)


# --- WADO-RS ------------------------------------------------------------------


@router.get("/studies/{study}", response_class=StreamingResponse, responses=_RETRIEVE)
def retrieve_study(request: Request, principal: Engineer, study: Uid) -> Response:
    """WADO-RS: every served instance of the study, as stored."""
    return _retrieve(request, principal, study)


@router.get(
    "/studies/{study}/series/{series}", response_class=StreamingResponse, responses=_RETRIEVE
)
def retrieve_series(request: Request, principal: Engineer, study: Uid, series: Uid) -> Response:
    """WADO-RS: every served instance of one series, as stored."""
    return _retrieve(request, principal, study, series)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}",
    response_class=StreamingResponse,
    responses=_RETRIEVE,
)
def retrieve_instance(
    request: Request, principal: Engineer, study: Uid, series: Uid, instance: Uid
) -> Response:
    """WADO-RS: one instance, as stored, in a multipart body of one part."""
    return _retrieve(request, principal, study, series, instance)


@router.get("/studies/{study}/metadata", responses=_METADATA)
def study_metadata(request: Request, principal: Engineer, study: Uid) -> Response:
    """WADO-RS metadata: every served instance's header, without pixel data."""
    return _metadata(request, principal, study)


@router.get("/studies/{study}/series/{series}/metadata", responses=_METADATA)
def series_metadata(request: Request, principal: Engineer, study: Uid, series: Uid) -> Response:
    """WADO-RS metadata: the headers of one series' instances, without pixel data."""
    return _metadata(request, principal, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", responses=_METADATA)
def instance_metadata(
    request: Request, principal: Engineer, study: Uid, series: Uid, instance: Uid
) -> Response:
    """WADO-RS metadata: one instance's header, without pixel data."""
    return _metadata(request, principal, study, series, instance)
