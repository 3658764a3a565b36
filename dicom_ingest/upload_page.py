"""The clinicians' upload page, and what it shows at the end: series and thumbnails.

Pages: ``GET /upload`` lets a clinician pick one of the cases they may upload
to (:func:`cases_within_reach` with ``upload``); ``GET /cases/{case_id}/upload``
is the per-case upload link. The page itself (``upload.html`` and its
scripts under ``/static``) talks to the upload API under ``/api/uploads``
(tus 1.0) and reads the two routes below at the end.

API (contract item 6): ``GET /api/uploads/{upload_id}/summary`` and
``GET /api/uploads/{upload_id}/series/{series_id}/thumbnail.png``. Both serve
only the uploader's own upload of a case still within their reach; anything
else answers 404 like an unknown upload. The summary holds series
descriptions and, per series, the patient's initials, birth date and sex
and the study date (for the uploader to confirm the patient), read from the
encrypted headers on demand
(:mod:`dicom_ingest.summary`); both reads are recorded in the access log by
internal identifiers and counts only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from dicom_ingest.summary import SeriesSummary, middle_instance, summarise
from dicom_ingest.uploads import find_upload
from vault.api.pages import render
from vault.audit import DetailValue
from vault.auth.guard import caller_record, require
from vault.auth.permissions import (
    CaseAction,
    Permission,
    Principal,
    can_access_case,
    cases_within_reach,
)
from vault.catalog.models import Case
from vault.catalog.uploads import upload_instance_ids
from vault.core import Vault
from vault.errors import NotFound, PreviewUnavailable
from vault.reader import open_instance
from vault.thumbnails import ThumbnailUnavailable, render_thumbnail

router = APIRouter(tags=["uploads"])
UploaderPage = Annotated[Principal, Depends(require(Permission.UPLOAD, page=True))]
Uploader = Annotated[Principal, Depends(require(Permission.UPLOAD))]
Id = Annotated[str, Path(max_length=32)]
# A preview of an original image, which may show burned-in patient details:
# kept in no browser cache, where it would outlive the session on a shared
# hospital computer.
THUMBNAIL_CACHE = "no-store"
_NOT_FOUND: dict[int | str, dict[str, str]] = {
    404: {"description": "unknown, not the caller's own upload, or its case is out of reach"},
}


class IdentityOut(BaseModel):
    """The patient and study as the uploader confirms them (ISO 8601 dates)."""

    initials: str | None
    birth_date: str | None
    sex: str | None
    study_date: str | None


class SeriesOut(BaseModel):
    series_id: str
    modality: str | None
    description: str | None
    images: int
    slice_thickness_mm: float | None
    pixel_spacing_mm: tuple[float, float] | None
    thumbnail_url: str
    identity: IdentityOut | None = None


class WarningOut(BaseModel):
    code: str
    series_id: str | None
    message: str


class SummaryOut(BaseModel):
    series: list[SeriesOut]
    warnings: list[WarningOut]


def _vault(request: Request) -> Vault:
    return request.app.state.vault


@router.get("/upload", response_class=HTMLResponse, include_in_schema=False)
def choose_case(request: Request, principal: UploaderPage) -> Response:
    """The cases the caller may upload to, each linking to its upload page."""
    with _vault(request).catalog.read_session() as session:
        cases = list(cases_within_reach(principal, CaseAction.UPLOAD, session=session))
    return render(request, "upload.html", cases=cases, case=None)


@router.get("/cases/{case_id}/upload", response_class=HTMLResponse, include_in_schema=False)
def case_upload_page(request: Request, principal: UploaderPage, case_id: Id) -> Response:
    """The upload page of one case (404 when out of reach)."""
    vault = _vault(request)
    with vault.catalog.read_session() as session:
        if not can_access_case(principal, case_id, CaseAction.UPLOAD, session=session):
            raise NotFound("no such case")
        case = session.get(Case, case_id)
    uploads = vault.settings.uploads
    return render(
        request,
        "upload.html",
        cases=[],
        case=case,
        chunk_bytes=uploads.browser_chunk_bytes,
        parallel=uploads.browser_parallel_files,
        stall_ms=round(uploads.browser_stall_seconds * 1000),
        max_thickness=uploads.max_slice_thickness_mm,
    )


def _own_instance_ids(session: Session, principal: Principal, upload_id: str) -> list[str]:
    """The instances of the caller's own upload ``upload_id``; NotFound otherwise."""
    find_upload(session, principal, upload_id)
    return upload_instance_ids(session, upload_id)


def _record(
    request: Request,
    principal: Principal,
    action: str,
    kind: str,
    oid: str,
    *,
    outcome: str = "success",
    **detail: DetailValue,
) -> None:
    record = caller_record(
        request,
        principal,
        action,
        outcome=outcome,
        object_type=kind,
        object_id=oid,
        detail=detail,
    )
    _vault(request).audit.record(record)


def _series_out(upload_id: str, series: SeriesSummary) -> SeriesOut:
    return SeriesOut(
        series_id=series.series_id,
        modality=series.modality,
        description=series.description,
        images=series.images,
        slice_thickness_mm=series.slice_thickness_mm,
        pixel_spacing_mm=series.pixel_spacing_mm,
        thumbnail_url=f"/api/uploads/{upload_id}/series/{series.series_id}/thumbnail.png",
        identity=IdentityOut(**vars(series.identity)) if series.identity else None,
    )


@router.get("/api/uploads/{upload_id}/summary", response_model=SummaryOut, responses=_NOT_FOUND)
def upload_summary(request: Request, principal: Uploader, upload_id: Id) -> SummaryOut:
    """The series the upload stored, with thumbnails, and warnings for implant design.

    Warnings: slice thickness or spacing above the configured limit, missing
    slices or irregular spacing, a localiser-only upload, several patients.
    """
    vault = _vault(request)
    with vault.catalog.read_session() as session:
        instance_ids = _own_instance_ids(session, principal, upload_id)
    limit = vault.settings.uploads.max_slice_thickness_mm
    summary = summarise(vault, instance_ids, max_slice_thickness_mm=limit)
    _record(
        request,
        principal,
        "series.metadata",
        "upload",
        upload_id,
        series=len(summary.series),
        instances=len(instance_ids),
    )
    return SummaryOut(
        series=[_series_out(upload_id, series) for series in summary.series],
        warnings=[WarningOut(**vars(warning)) for warning in summary.warnings],
    )


@router.get(
    "/api/uploads/{upload_id}/series/{series_id}/thumbnail.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_NOT_FOUND},
)
def series_thumbnail(
    request: Request, principal: Uploader, upload_id: Id, series_id: Id
) -> Response:
    """A greyscale PNG of the series' middle image (privately cacheable)."""
    vault = _vault(request)
    with vault.catalog.read_session() as session:
        instance_ids = _own_instance_ids(session, principal, upload_id)
    instance_id = middle_instance(vault, instance_ids, series_id)
    if instance_id is None:
        raise NotFound("no such series in this upload")
    try:
        with open_instance(vault, instance_id) as stream:
            png = render_thumbnail(stream)
    except ThumbnailUnavailable as exc:
        _record(request, principal, "instance.read", "instance", instance_id, outcome="no-preview")
        raise PreviewUnavailable(str(exc)) from exc
    _record(request, principal, "instance.read", "instance", instance_id, purpose="thumbnail")
    return Response(png, media_type="image/png", headers={"Cache-Control": THUMBNAIL_CACHE})
