"""The engineers' REST API: pseudonymised studies of their assigned cases, and downloads.

Routes read only pseudonymised rows and objects, through
:mod:`vault.pseudonymised_index`, never originals. A study is reached
through its case with ``read-pseudonymised``; one out of reach answers 404
exactly like an unknown one, one not finished answers 409 with its state for
downloads (its metadata shows the state), and quarantined instances are
never served. Study and series archives and single instances answer ``HEAD``
and support ``If-None-Match`` (304) and one ``Range`` (206, ``If-Range`` honoured, 416
past the end); see :mod:`vault.api.engineer_access`. Every read is recorded
in the access log with its outcome once the transfer ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute

from crypto.errors import CryptoError
from vault.api.engineer_access import (
    ERRORS,
    RANGE_ERRORS,
    AccessRecord,
    Engineer,
    crc_cache,
    download_response,
    vault_of,
)
from vault.api.engineer_metadata import (
    series_detail_of,
    study_instances,
    study_metadata_of,
    study_summaries,
)
from vault.api.engineer_models import SeriesDetail, StudyMetadata, StudySummary
from vault.auth.permissions import Principal
from vault.downloads import (
    ArchiveMember,
    MemberOpener,
    archive_etag,
    archive_size,
    opener,
    stream_archive,
    stream_object,
)
from vault.errors import NotFound, VaultError
from vault.pseudonymised_index import reachable_study, require_done, served_instance

router = APIRouter(prefix="/api/engineer", tags=["engineer"])
Id = Annotated[str, Path(max_length=32)]
Uid = Annotated[str, Path(max_length=64, pattern=r"^[0-9.]+$")]
_STUDY = "pseudonymised-study"


@router.get("/studies", response_model=list[StudySummary])
def list_studies(request: Request, principal: Engineer) -> list[StudySummary]:
    """The pseudonymised studies of the caller's cases, with their series. No PHI."""
    finish = AccessRecord(request, principal, "study.list", "query", None)
    try:
        summaries = study_summaries(vault_of(request), principal)
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    finish.detail["results"] = len(summaries)
    finish("success")
    return summaries


@router.get("/studies/{pseudo_study_id}", response_model=StudyMetadata, responses=ERRORS)
def study_metadata(request: Request, principal: Engineer, pseudo_study_id: Id) -> StudyMetadata:
    """One study's metadata: state, counts, de-identification marks, series. No PHI."""
    finish = AccessRecord(request, principal, "study.metadata", _STUDY, pseudo_study_id)
    try:
        metadata = study_metadata_of(vault_of(request), principal, pseudo_study_id)
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    finish("success")
    return metadata


@router.get(
    "/studies/{pseudo_study_id}/series/{pseudo_series_uid}",
    response_model=SeriesDetail,
    responses=ERRORS,
)
def series_metadata(
    request: Request, principal: Engineer, pseudo_study_id: Id, pseudo_series_uid: Uid
) -> SeriesDetail:
    """One series of a finished study: catalog values and its instances. No PHI."""
    vault = vault_of(request)
    finish = AccessRecord(request, principal, "series.metadata", _STUDY, pseudo_study_id)
    try:
        detail, series_id = series_detail_of(vault, principal, pseudo_study_id, pseudo_series_uid)
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    finish.detail["series_id"] = series_id
    finish("success")
    return detail


def _archive(
    request: Request,
    finish: AccessRecord,
    found: tuple[list[ArchiveMember], MemberOpener],
    filename: str,
) -> Response:
    members, open_member = found
    crcs = crc_cache(request)
    return download_response(
        request,
        finish,
        lambda byte_range: stream_archive(members, open_member, byte_range=byte_range, crcs=crcs),
        size=archive_size(members),
        etag=archive_etag(members),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _archive_of(
    request: Request, principal: Principal, finish: AccessRecord, study_id: str, series: str | None
) -> tuple[list[ArchiveMember], MemberOpener]:
    """The members of a finished study (or one series of it) and an opener with their keys."""
    vault = vault_of(request)
    try:
        with vault.catalog.read_session() as session:
            study = reachable_study(session, principal, study_id)
            require_done(study)
            instances = study_instances(session, principal, study, series)
        if not instances:
            raise NotFound("no such series")
        members = [info.member for info in instances]
        open_member = opener(vault, {member.stored.key_id for member in members})
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    if series is not None:
        finish.detail["series_id"] = instances[0].series_id
    return members, open_member


_ZIP = {200: {"content": {"application/zip": {}}}, **RANGE_ERRORS}


@router.get("/studies/{pseudo_study_id}/archive", response_class=StreamingResponse, responses=_ZIP)
def download_study(request: Request, principal: Engineer, pseudo_study_id: Id) -> Response:
    """The whole pseudonymised study as a ZIP, streamed while it is produced.

    Members are ``<pseudo series UID>/<pseudo SOP instance UID>.dcm`` in stored
    mode; quarantined instances are left out. The output is deterministic:
    the ETag is stable, Content-Length exact, and a ``Range`` resumes an
    interrupted download. A member failing verification aborts the transfer.
    """
    finish = AccessRecord(request, principal, "study.download", _STUDY, pseudo_study_id)
    members = _archive_of(request, principal, finish, pseudo_study_id, None)
    return _archive(request, finish, members, f"study-{pseudo_study_id}.zip")


@router.get(
    "/studies/{pseudo_study_id}/series/{pseudo_series_uid}/archive",
    response_class=StreamingResponse,
    responses=_ZIP,
)
def download_series(
    request: Request, principal: Engineer, pseudo_study_id: Id, pseudo_series_uid: Uid
) -> Response:
    """One series of the study as a ZIP, laid out like the study's (same member names)."""
    finish = AccessRecord(request, principal, "series.download", _STUDY, pseudo_study_id)
    members = _archive_of(request, principal, finish, pseudo_study_id, pseudo_series_uid)
    return _archive(request, finish, members, f"series-{pseudo_study_id}.zip")


@router.get(
    "/instances/{pseudo_instance_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/dicom": {}}}, **RANGE_ERRORS},
)
def download_instance(request: Request, principal: Engineer, pseudo_instance_id: Id) -> Response:
    """One pseudonymised instance as a DICOM Part 10 file (``application/dicom``)."""
    vault = vault_of(request)
    kind = "pseudonymised-instance"
    finish = AccessRecord(request, principal, "instance.read", kind, pseudo_instance_id)
    try:
        with vault.catalog.read_session() as session:
            stored = served_instance(session, principal, pseudo_instance_id)
        open_member = opener(vault, {stored.key_id})
    except (VaultError, CryptoError) as exc:
        finish.refused(exc)
        raise
    return download_response(
        request,
        finish,
        lambda byte_range: stream_object(stored, open_member, byte_range=byte_range),
        size=stored.size,
        etag=f'"{stored.sha256}"',
        media_type="application/dicom",
    )


def _answer_head(*endpoints: Callable[..., Response]) -> None:
    """Each download route answers ``HEAD`` too: a download manager asks for the
    size and ETag before it asks for ranges (same route, same access record)."""
    paths = {route.endpoint: route.path for route in router.routes if isinstance(route, APIRoute)}
    for endpoint in endpoints:
        path = paths[endpoint].removeprefix(router.prefix)
        router.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


_answer_head(download_study, download_series, download_instance)
