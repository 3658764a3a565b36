"""The series summary of an upload: what arrived, so the surgeon can confirm it.

:func:`summarise` takes the ids of the instances an upload stored and returns
its series (modality, description, number of images, slice thickness, pixel
spacing, the middle instance for a thumbnail, and the patient's initials,
birth date and sex with the study date, so the uploader can tell the scan is
their patient's) and its warnings
(:mod:`dicom_ingest.summary_checks`). The catalog keeps no description, so
every instance's header is read on demand through the one decrypting reader
(:func:`vault.reader.open_instance`) with the pipeline's own header reader
(:func:`dicom_ingest.header.read_header`: pydicom, stopping before the pixel
data), and the stream is closed there. The
result holds the series description and those patient facts: it is meant
only for the uploader's own page, never for logs or the access log.

:func:`middle_instance` picks the instance a series' thumbnail shows from the
catalog alone (slice position, then instance number), without decrypting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName
from sqlalchemy import select

from dicom_ingest.header import read_header as parse_header
from dicom_ingest.summary_checks import (
    ImageHeader,
    PatientIdentity,
    SummaryWarning,
    localiser_only_warning,
    mixed_patients_warning,
    most_common,
    series_warnings,
)
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.reader import open_instance

DEFAULT_MAX_SLICE_THICKNESS_MM = 1.25
_IN_CHUNK = 500  # ids per IN (...) clause


@dataclass(frozen=True)
class SeriesSummary:
    series_id: str
    modality: str | None
    description: str | None
    images: int
    slice_thickness_mm: float | None
    pixel_spacing_mm: tuple[float, float] | None
    middle_instance_id: str
    identity: PatientIdentity | None = None


@dataclass(frozen=True)
class UploadSummary:
    series: list[SeriesSummary]
    warnings: list[SummaryWarning]


@dataclass(frozen=True)
class _Catalogued:
    instance_id: str
    series_id: str
    patient_digest: str | None
    slice_position: float | None
    instance_number: int | None


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    unique = sorted(set(ids))
    for start in range(0, len(unique), _IN_CHUNK):
        yield unique[start : start + _IN_CHUNK]


def _catalogued(vault: Vault, instance_ids: Sequence[str]) -> list[_Catalogued]:
    found: list[_Catalogued] = []
    with vault.catalog.read_session() as session:
        for chunk in _chunks(instance_ids):
            query = (
                select(
                    Instance.id,
                    Instance.series_id,
                    Study.patient_digest,
                    Instance.slice_position,
                    Instance.instance_number,
                )
                .join(Study, Study.id == Instance.study_id)
                .where(Instance.id.in_(chunk))
            )
            found.extend(_Catalogued(*row) for row in session.execute(query))
    return found


def _middle(rows: Sequence[_Catalogued]) -> str:
    """The middle instance by slice position, then instance number, then id."""

    def order(row: _Catalogued) -> tuple[bool, float, int, str]:
        position = row.slice_position
        return (position is None, position or 0.0, row.instance_number or 0, row.instance_id)

    ordered = sorted(rows, key=order)
    return ordered[len(ordered) // 2].instance_id


def middle_instance(vault: Vault, instance_ids: Sequence[str], series_id: str) -> str | None:
    """The instance of ``series_id`` (among ``instance_ids``) a thumbnail shows."""
    rows = [row for row in _catalogued(vault, instance_ids) if row.series_id == series_id]
    return _middle(rows) if rows else None


def _float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count else None


def _first_item(dataset: Dataset | None, keyword: str) -> Dataset | None:
    sequence = dataset.get(keyword) if dataset is not None else None
    return sequence[0] if sequence else None


def _functional(ds: Dataset, frame: Dataset | None, group: str) -> Dataset | None:
    """A functional group's item for a frame, or the shared one (enhanced images)."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    return _first_item(frame, group) or _first_item(shared, group)


Position = tuple[float, float, float]


def _geometry(ds: Dataset) -> tuple[Dataset, tuple[float, ...] | None, tuple[Position, ...]]:
    """Pixel measures, orientation and per-frame positions, classic or enhanced."""
    frames = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    if not frames:
        position = _floats(ds.get("ImagePositionPatient"), 3)
        positions = (position,) if position else ()
        return ds, _floats(ds.get("ImageOrientationPatient"), 6), positions  # type: ignore[return-value]
    first = frames[0]
    measures = _functional(ds, first, "PixelMeasuresSequence") or Dataset()
    plane = _functional(ds, first, "PlaneOrientationSequence") or Dataset()
    positions: list[Position] = []
    for frame in frames:
        item = _functional(ds, frame, "PlanePositionSequence")
        position = _floats(item.get("ImagePositionPatient"), 3) if item is not None else None
        if position:
            positions.append(position)  # type: ignore[arg-type]
    return measures, _floats(plane.get("ImageOrientationPatient"), 6), tuple(positions)


def _integer(value: object) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _iso_date(value: object) -> str | None:
    """A DA value as ``YYYY-MM-DD``; None when absent or not a real date."""
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])).isoformat()
    except ValueError:
        return None


def _initial(component: str) -> str | None:
    letter = next((c for c in component if c.isalnum()), None)
    return f"{letter.upper()}." if letter else None


def _initials(value: object) -> str | None:
    """Initials of the given then the family name ("J. D."), from the alphabetic group."""
    if not value:
        return None
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    letters = [_initial(name.given_name), _initial(name.family_name)]
    found = [letter for letter in letters if letter]
    return " ".join(found) or None


def identity_of(ds: Dataset) -> PatientIdentity:
    """The facts that let the uploader confirm the patient and the scan."""
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    return PatientIdentity(
        initials=_initials(ds.get("PatientName")),
        birth_date=_iso_date(ds.get("PatientBirthDate")),
        sex=sex if sex in {"F", "M", "O"} else None,
        study_date=_iso_date(ds.get("StudyDate")),
    )


def header_of(ds: Dataset, instance_id: str, series_id: str) -> ImageHeader:
    """The summary's view of one parsed header (tolerant of odd values)."""
    measures, orientation, positions = _geometry(ds)
    spacing = _floats(measures.get("PixelSpacing"), 2)
    description = str(ds.get("SeriesDescription", "") or "").strip()
    return ImageHeader(
        instance_id=instance_id,
        series_id=series_id,
        modality=str(ds.get("Modality", "") or "") or None,
        description=description or None,
        series_number=_integer(ds.get("SeriesNumber")),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
        thickness_mm=_float(measures.get("SliceThickness")),
        spacing_mm=(spacing[0], spacing[1]) if spacing else None,
        orientation=orientation,
        positions=positions,
        instance_number=_integer(ds.get("InstanceNumber")),
        frames=max(_integer(ds.get("NumberOfFrames")) or 1, 1),
        identity=identity_of(ds),
    )


def read_header(vault: Vault, instance_id: str, series_id: str) -> ImageHeader:
    """Decrypt only the header of one stored instance and summarise it."""
    with open_instance(vault, instance_id) as stream:
        header, _ = parse_header(stream, max_header_bytes=vault.settings.limits.max_header_bytes)
    return header_of(header.dataset, instance_id, series_id)


def _series_summary(series_id: str, images: Sequence[ImageHeader], middle: str) -> SeriesSummary:
    spacing = most_common([image.spacing_mm for image in images])
    thickness = most_common([image.thickness_mm for image in images])
    return SeriesSummary(
        series_id=series_id,
        modality=most_common([image.modality for image in images]),  # type: ignore[arg-type]
        description=most_common([image.description for image in images]),  # type: ignore[arg-type]
        images=sum(image.frames for image in images),
        slice_thickness_mm=thickness,  # type: ignore[arg-type]
        pixel_spacing_mm=spacing,  # type: ignore[arg-type]
        middle_instance_id=middle,
        identity=most_common([image.identity for image in images]),  # type: ignore[arg-type]
    )


def _series_order(images: Sequence[ImageHeader]) -> tuple[int, str]:
    number = most_common([image.series_number for image in images])
    return (number if isinstance(number, int) else 1 << 30, images[0].series_id)


def summarise(
    vault: Vault,
    instance_ids: Sequence[str],
    *,
    max_slice_thickness_mm: float = DEFAULT_MAX_SLICE_THICKNESS_MM,
) -> UploadSummary:
    """The series among ``instance_ids`` and the warnings about them.

    Raises (from the reader): KeyDestroyedError, IntegrityError.
    """
    rows = _catalogued(vault, instance_ids)
    by_series: dict[str, list[_Catalogued]] = {}
    for row in rows:
        by_series.setdefault(row.series_id, []).append(row)
    grouped = [
        [read_header(vault, row.instance_id, series_id) for row in members]
        for series_id, members in by_series.items()
    ]
    ordered = sorted(grouped, key=_series_order)
    series, warnings = [], []
    for images in ordered:
        series_id = images[0].series_id
        series.append(_series_summary(series_id, images, _middle(by_series[series_id])))
        warnings.extend(series_warnings(series_id, images, max_slice_thickness_mm))
    warnings.extend(localiser_only_warning(ordered))
    warnings.extend(mixed_patients_warning([row.patient_digest for row in rows]))
    return UploadSummary(series, warnings)
