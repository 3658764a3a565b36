"""The validation policy every entry point applies to every instance.

:func:`validate` checks a parsed header against a :class:`ValidationPolicy`
and returns the :class:`InstanceFacts` the pipeline catalogues. Each refusal
is one exception class from :mod:`vault.errors` with a plain-words message
that names the attribute, never its value.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_ingest.header import InstanceHeader
from vault.errors import (
    CorruptHeader,
    MissingAttribute,
    PolicyRefused,
    SopClassRefused,
    TransferSyntaxRefused,
)
from vault.settings import PolicySettings

_REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_LABELS = {
    "SOPClassUID": "SOP Class UID",
    "SOPInstanceUID": "SOP Instance UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}


@dataclass(frozen=True)
class ValidationPolicy:
    """What is accepted. Built from :class:`vault.settings.PolicySettings`."""

    sop_classes: frozenset[str]
    transfer_syntaxes: frozenset[str]
    require_pixels: bool = True

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> ValidationPolicy:
        return cls(
            sop_classes=frozenset(settings.sop_classes),
            transfer_syntaxes=frozenset(settings.transfer_syntaxes),
        )


@dataclass(frozen=True)
class InstanceFacts:
    """What the pipeline needs from one header. UIDs and patient identity stay
    in memory: the catalog receives only their keyed digests."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    patient_id: str
    issuer_of_patient_id: str
    modality: str | None
    rows: int | None
    columns: int | None
    slice_thickness: float | None
    pixel_spacing: str | None
    instance_number: int | None
    slice_position: float | None


def _uid(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    if not value:
        raise MissingAttribute(f"the {_LABELS[keyword]} is missing")
    uid = UID(str(value).strip("\x00 "))
    if not uid.is_valid:
        raise CorruptHeader(f"the {_LABELS[keyword]} is not a valid UID")
    return str(uid)


def _number(dataset: Dataset, keyword: str) -> float | None:
    try:
        value = dataset.get(keyword)
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _slice_position(dataset: Dataset) -> float | None:
    """Position along the slice normal (for gap detection), when geometry is there."""
    try:
        position = [float(v) for v in dataset.ImagePositionPatient]
        row, col = dataset.ImageOrientationPatient[:3], dataset.ImageOrientationPatient[3:]
    except (AttributeError, TypeError, ValueError):
        return _number(dataset, "SliceLocation")
    normal = (
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    )
    return sum(p * n for p, n in zip(position, normal, strict=True))


def _check_meta(header: InstanceHeader, sop_class: str, sop_instance: str) -> None:
    meta = header.dataset.file_meta
    stored_class = meta.get("MediaStorageSOPClassUID")
    stored_instance = meta.get("MediaStorageSOPInstanceUID")
    if stored_class is not None and str(stored_class) != sop_class:
        raise CorruptHeader("the file meta SOP Class UID does not match the data set")
    if stored_instance is not None and str(stored_instance) != sop_instance:
        raise CorruptHeader("the file meta SOP Instance UID does not match the data set")


def _uid_name(value: str) -> str:
    """A UID's registered name, the UID itself, or "unknown": never other text from the file."""
    uid = UID(value)
    return uid.name if uid.is_valid else "unknown"


def _check_policy(policy: ValidationPolicy, header: InstanceHeader, sop_class: str) -> None:
    if sop_class not in policy.sop_classes:
        name = _uid_name(sop_class)
        raise SopClassRefused(f"this kind of object ({name}) is not accepted for implant design")
    if header.transfer_syntax_uid not in policy.transfer_syntaxes:
        name = _uid_name(header.transfer_syntax_uid)
        raise TransferSyntaxRefused(f"the encoding ({name}) is not accepted")
    if policy.require_pixels and header.pixels is None:
        raise MissingAttribute("the image has no pixel data")


def _pixel_spacing(dataset: Dataset) -> str | None:
    spacing = dataset.get("PixelSpacing")
    if spacing is None or len(spacing) != 2:
        return None
    return "\\".join(f"{float(v):g}" for v in spacing)


def validate(header: InstanceHeader, policy: ValidationPolicy) -> InstanceFacts:
    """Check ``header`` against ``policy``.

    pydicom converts values lazily, so an undecodable element (an unknown VR,
    a malformed number) surfaces here and is refused as a corrupt header.

    Raises:
        MissingAttribute, CorruptHeader, SopClassRefused, TransferSyntaxRefused.
    """
    try:
        return _validate(header, policy)
    except (NotImplementedError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptHeader("the DICOM header has an element that cannot be decoded") from exc


def _validate(header: InstanceHeader, policy: ValidationPolicy) -> InstanceFacts:
    ds = header.dataset
    sop_class, sop_instance, study, series = (_uid(ds, k) for k in _REQUIRED_UIDS)
    _check_meta(header, sop_class, sop_instance)
    _check_policy(policy, header, sop_class)
    try:
        number = ds.get("InstanceNumber")
        instance_number = int(number) if number not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise CorruptHeader("the Instance Number is not a number") from exc
    return InstanceFacts(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_uid=study,
        series_uid=series,
        transfer_syntax_uid=header.transfer_syntax_uid,
        patient_id=str(ds.get("PatientID", "") or ""),
        issuer_of_patient_id=str(ds.get("IssuerOfPatientID", "") or ""),
        modality=str(ds.get("Modality", "")) or None,
        rows=ds.get("Rows"),
        columns=ds.get("Columns"),
        slice_thickness=_number(ds, "SliceThickness"),
        pixel_spacing=_pixel_spacing(ds),
        instance_number=instance_number,
        slice_position=_slice_position(ds),
    )


__all__ = ["InstanceFacts", "PolicyRefused", "ValidationPolicy", "validate"]
