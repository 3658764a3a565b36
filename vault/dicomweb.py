"""DICOMweb over pseudonymised data: QIDO-RS searches and WADO-RS retrievals for one caller.

Searches (:func:`search`) filter, order and page in the catalog
(:mod:`vault.pseudonymised_index`, finished studies of the caller's cases
only), then read one pseudonymised header per result for the attributes the
catalog does not hold: a representative instance per study or series, each
instance at instance level. A header read decrypts only the segments before
the pixel data (about one 256 KiB segment for a CT slice), so a page of
results costs about a millisecond per result and nothing is cached.

Retrievals (:func:`retrieval`) name a finished study by its pseudonymised
UID (a study still being de-identified answers 409 with its state; one out of
reach, 404) and list its served instances in archive order; the routes
stream them as multipart (:mod:`vault.wado`) or as metadata
(:func:`metadata_stream`): the headers, with BulkDataURIs for pixel data and
large binary values (:mod:`vault.wado_bulk`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydicom.dataset import Dataset

from vault.auth.permissions import Principal
from vault.catalog.deid import PseudonymisedStudy
from vault.core import Vault
from vault.dicom_headers import header_or_none
from vault.downloads import MemberOpener, opener
from vault.errors import NotFound
from vault.objects import StoredObject
from vault.pixel_data import pixel_element
from vault.pseudonymised_index import (
    Filters,
    InstanceInfo,
    SeriesInfo,
    find_instances,
    find_series,
    find_studies,
    reachable_study_by_uid,
    representatives,
    require_done,
    stored_by_id,
    study_counts,
)
from vault.qido import MAX_RESULTS, Level, Search, render
from vault.wado_bulk import json_with_bulk


@dataclass(frozen=True)
class Found:
    """One search's results and whether the service's result limit cut them short."""

    results: list[dict[str, object]]
    truncated: bool


def _headers(vault: Vault, stored: dict[str, StoredObject]) -> dict[str, Dataset | None]:
    """Each object's header; None for one that cannot be read (its result keeps catalog values)."""
    open_member = opener(vault, {item.key_id for item in stored.values()})
    return {key: header_or_none(open_member, item) for key, item in stored.items()}


def _study_values(
    study: PseudonymisedStudy, counts: tuple[int, int, list[str]], base: str
) -> Dataset:
    series, instances, modalities = counts
    values = Dataset()
    values.StudyInstanceUID = study.pseudo_study_uid
    values.PatientID = study.pseudonym or ""
    values.ModalitiesInStudy = modalities
    values.NumberOfStudyRelatedSeries = series
    values.NumberOfStudyRelatedInstances = instances
    values.RetrieveURL = f"{base}/studies/{study.pseudo_study_uid}"
    return values


def _series_values(info: SeriesInfo, base: str) -> Dataset:
    values = Dataset()
    values.StudyInstanceUID = info.study_uid
    values.SeriesInstanceUID = info.series_uid
    values.Modality = info.modality or ""
    values.NumberOfSeriesRelatedInstances = info.instance_count
    values.RetrieveURL = f"{base}/studies/{info.study_uid}/series/{info.series_uid}"
    return values


def _instance_values(info: InstanceInfo, base: str) -> Dataset:
    values = Dataset()
    values.StudyInstanceUID = info.study_uid
    values.SeriesInstanceUID = info.series_uid
    values.SOPClassUID = info.sop_class_uid
    values.SOPInstanceUID = info.sop_uid
    values.Modality = info.modality or ""
    values.AvailableTransferSyntaxUID = info.transfer_syntax_uid
    if info.instance_number is not None:
        values.InstanceNumber = info.instance_number
    values.RetrieveURL = instance_url(base, info)
    return values


def _page(search: Search) -> tuple[int, int]:
    """The offset and the number of rows to fetch: one more than asked, to see a cut."""
    return search.offset, search.limit + 1


def _studies(vault: Vault, principal: Principal, search: Search, base: str) -> list[dict]:
    offset, limit = _page(search)
    with vault.catalog.read_session() as session:
        studies = find_studies(session, principal, search.filters, offset=offset, limit=limit)
        ids = [study.id for study in studies]
        counts, stored = study_counts(session, ids), representatives(session, ids)
    headers = _headers(vault, stored)
    none: tuple[int, int, list[str]] = (0, 0, [])
    values = {study.id: _study_values(study, counts.get(study.id, none), base) for study in studies}
    return [render(search, values[study.id], headers.get(study.id)) for study in studies]


def _series(vault: Vault, principal: Principal, search: Search, base: str) -> list[dict]:
    offset, limit = _page(search)
    with vault.catalog.read_session() as session:
        found = find_series(session, principal, search.filters, offset=offset, limit=limit)
        stored = stored_by_id(session, [info.representative_id for info in found])
    headers = _headers(vault, stored)
    return [
        render(search, _series_values(info, base), headers.get(info.representative_id))
        for info in found
    ]


def _instances(vault: Vault, principal: Principal, search: Search, base: str) -> list[dict]:
    offset, limit = _page(search)
    with vault.catalog.read_session() as session:
        found = find_instances(session, principal, search.filters, offset=offset, limit=limit)
    page = found[: search.limit]
    headers = _headers(vault, {info.id: info.stored for info in page})
    results = [render(search, _instance_values(info, base), headers[info.id]) for info in page]
    return results + [{}] * (len(found) - len(page))  # the one past the page: only counted


def search(vault: Vault, principal: Principal, query: Search, base: str) -> Found:
    """The results of ``query`` for ``principal``; ``base`` is the DICOMweb root URL."""
    run = {Level.STUDY: _studies, Level.SERIES: _series, Level.INSTANCE: _instances}[query.level]
    results = run(vault, principal, query, base)
    cut = len(results) > query.limit
    return Found(results[: query.limit], cut and query.limit == MAX_RESULTS)


def retrieval(
    vault: Vault, principal: Principal, study_uid: str, series_uid: str = "", sop_uid: str = ""
) -> tuple[PseudonymisedStudy, list[InstanceInfo]]:
    """A finished study within reach and its served instances (of one series, or one).

    Raises:
        NotFound: unknown or out of reach; no such series or instance in it.
        NotReady: the study is still being de-identified (its state is given).
    """
    with vault.catalog.read_session() as session:
        study = reachable_study_by_uid(session, principal, study_uid)
        require_done(study)
        filters = Filters(
            study_ids=(study.id,),
            series_uids=(series_uid,) if series_uid else (),
            sop_uids=(sop_uid,) if sop_uid else (),
        )
        instances = find_instances(session, principal, filters, offset=0, limit=None)
    if not instances:
        raise NotFound("no such series or instance")
    return study, instances


def instance_url(base: str, info: InstanceInfo) -> str:
    """The WADO-RS URL of one instance (pseudonymised UIDs only)."""
    return f"{base}/studies/{info.study_uid}/series/{info.series_uid}/instances/{info.sop_uid}"


def _metadata(info: InstanceInfo, open_member: MemberOpener, base: str) -> dict[str, object]:
    dataset, pixels = pixel_element(open_member, info.stored)
    dataset.AvailableTransferSyntaxUID = info.transfer_syntax_uid
    bulk = f"{instance_url(base, info)}/bulkdata"
    values = json_with_bulk(dataset, lambda path: f"{bulk}/{path}")
    if pixels is not None:
        values[f"{pixels.tag:08X}"] = {"vr": pixels.vr, "BulkDataURI": f"{bulk}/{pixels.tag:08X}"}
    return values


def metadata_stream(
    instances: Sequence[InstanceInfo], open_member: MemberOpener, base: str
) -> Iterator[bytes]:
    """A JSON array of the instances' headers in the DICOM JSON model, one at a time.

    Pixel data and binary values above :data:`vault.wado_bulk.BULK_THRESHOLD`
    bytes are given as BulkDataURIs under ``base`` (the DICOMweb root URL).
    """
    for index, info in enumerate(instances):
        body = json.dumps(_metadata(info, open_member, base), separators=(",", ":")).encode()
        yield (b"," if index else b"[") + body
    yield b"]" if instances else b"[]"
