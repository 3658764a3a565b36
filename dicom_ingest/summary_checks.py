"""The warnings of an upload summary: what matters for implant design.

Each check takes the headers already read for the summary (:class:`ImageHeader`)
and returns :class:`SummaryWarning` items in plain words. Messages carry
numbers only (millimetres, counts, instance numbers): never a description,
UID or patient attribute. The checks:

- slice thickness (or, when thickness is fine, slice spacing) above the limit;
- gaps in a series: slice positions along the slice normal that jump by more
  than one and a half steps (missing slices), spacing that varies by more than
  a tenth of a step, and InstanceNumber sequences with holes;
- an upload of localiser (scout) images only;
- more than one patient in the upload, told from the patient digests alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOCALISER_TYPES = frozenset({"LOCALIZER", "SCOUT"})
GAP_FACTOR = 1.5  # a step this many times the usual one means slices are missing
IRREGULAR_FRACTION = 0.1  # steps differing from the usual one by more than this
SAME_POSITION_MM = 0.01  # images closer than this share a position (echoes, phases)


@dataclass(frozen=True)
class PatientIdentity:
    """Who and when, as the uploader checks it: initials, birth date, sex, study date.

    Shown only on the uploader's own page (the scan is theirs): never in a
    warning, a log line or the access log.
    """

    initials: str | None
    birth_date: str | None  # ISO 8601, from a valid DA value
    sex: str | None
    study_date: str | None  # ISO 8601, from a valid DA value


@dataclass(frozen=True)
class ImageHeader:
    """What the summary needs from one stored instance's header."""

    instance_id: str
    series_id: str
    modality: str | None
    description: str | None
    series_number: int | None
    image_type: tuple[str, ...]
    thickness_mm: float | None
    spacing_mm: tuple[float, float] | None
    orientation: tuple[float, ...] | None  # six direction cosines
    positions: tuple[tuple[float, float, float], ...]  # one per frame
    instance_number: int | None
    frames: int
    identity: PatientIdentity | None = None

    @property
    def is_localiser(self) -> bool:
        return bool(LOCALISER_TYPES.intersection(self.image_type))


@dataclass(frozen=True)
class SummaryWarning:
    code: str
    series_id: str | None
    message: str


def _mm(value: float) -> str:
    return f"{round(value, 3):g}"


def is_localiser_series(images: Sequence[ImageHeader]) -> bool:
    """Whether most images of a series are localisers (scouts)."""
    return sum(image.is_localiser for image in images) * 2 > len(images)


def most_common(values: Sequence[object]) -> object | None:
    present = [value for value in values if value is not None]
    return Counter(present).most_common(1)[0][0] if present else None


def thickness_warnings(
    series_id: str, images: Sequence[ImageHeader], limit_mm: float
) -> list[SummaryWarning]:
    """Slices thicker, or further apart, than ``limit_mm``."""
    thickness = most_common([image.thickness_mm for image in images])
    if isinstance(thickness, float) and thickness > limit_mm:
        message = (
            f"Slices are {_mm(thickness)} mm thick; "
            f"implant design needs {_mm(limit_mm)} mm or thinner."
        )
        return [SummaryWarning("slice-thickness", series_id, message)]
    steps = _steps(images)
    if steps is not None and float(np.median(steps)) > limit_mm:
        step = float(np.median(steps))
        message = (
            f"Slices are {_mm(step)} mm apart; implant design needs {_mm(limit_mm)} mm or closer."
        )
        return [SummaryWarning("slice-spacing", series_id, message)]
    return []


def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    cosines = np.asarray(orientation, dtype=float)
    return np.cross(cosines[:3], cosines[3:])


def _steps(images: Sequence[ImageHeader]) -> np.ndarray | None:
    """Distances between successive distinct slice positions along the normal.

    None when the series has no usable geometry: fewer than three positions,
    or images in different orientations (e.g. a three-plane localiser).
    """
    orientations = {image.orientation for image in images}
    if len(orientations) != 1 or None in orientations:
        return None
    normal = _normal(next(iter(orientations)))  # type: ignore[arg-type]
    along = [float(np.dot(p, normal)) for image in images for p in image.positions]
    distinct = np.unique(np.round(np.asarray(along) / SAME_POSITION_MM).astype(np.int64))
    if len(distinct) < 3:
        return None
    return np.diff(distinct) * SAME_POSITION_MM


def gap_warnings(series_id: str, images: Sequence[ImageHeader]) -> list[SummaryWarning]:
    """Missing slices or irregular spacing from the positions; else InstanceNumber holes."""
    steps = _steps(images)
    if steps is not None:
        step = float(np.median(steps))
        if step > 0:
            found = _position_gaps(series_id, steps, step)
            if found:
                return found
    return _number_gaps(series_id, images)


def _position_gaps(series_id: str, steps: np.ndarray, step: float) -> list[SummaryWarning]:
    jumps = steps[steps > GAP_FACTOR * step]
    if len(jumps):
        missing = int(sum(round(jump / step) - 1 for jump in jumps)) or len(jumps)
        message = (
            f"{missing} slice{'s' if missing != 1 else ''} seem{'' if missing != 1 else 's'} "
            f"to be missing: slices are {_mm(step)} mm apart, but {len(jumps)} "
            f"gap{'s' if len(jumps) != 1 else ''} of up to {_mm(float(jumps.max()))} mm "
            f"{'were' if len(jumps) != 1 else 'was'} found."
        )
        return [SummaryWarning("slice-gap", series_id, message)]
    if float(np.abs(steps - step).max()) > IRREGULAR_FRACTION * step:
        message = (
            f"The distance between slices varies from {_mm(float(steps.min()))} to "
            f"{_mm(float(steps.max()))} mm."
        )
        return [SummaryWarning("irregular-spacing", series_id, message)]
    return []


def _number_gaps(series_id: str, images: Sequence[ImageHeader]) -> list[SummaryWarning]:
    numbers = sorted({image.instance_number for image in images if image.instance_number})
    if len(numbers) < 2:
        return []
    missing = numbers[-1] - numbers[0] + 1 - len(numbers)
    if missing <= 0:
        return []
    message = (
        f"{missing} image{'s' if missing != 1 else ''} seem{'' if missing != 1 else 's'} "
        f"to be missing: instance numbers {numbers[0]} to {numbers[-1]} are not all there."
    )
    return [SummaryWarning("instance-number-gap", series_id, message)]


def localiser_only_warning(series: Sequence[Sequence[ImageHeader]]) -> list[SummaryWarning]:
    """A warning when every series received is a localiser."""
    if series and all(is_localiser_series(images) for images in series):
        message = "Only localiser (scout) images arrived: please send the full scan as well."
        return [SummaryWarning("localiser-only", None, message)]
    return []


def mixed_patients_warning(patient_digests: Sequence[str | None]) -> list[SummaryWarning]:
    """A warning when the upload's studies belong to more than one patient."""
    patients = {digest for digest in patient_digests if digest}
    if len(patients) < 2:
        return []
    message = (
        f"This upload holds images of {len(patients)} different patients; "
        "a case should hold the images of one patient only."
    )
    return [SummaryWarning("mixed-patients", None, message)]


def series_warnings(
    series_id: str, images: Sequence[ImageHeader], limit_mm: float
) -> list[SummaryWarning]:
    """Every per-series warning; localiser series are not checked for geometry."""
    if is_localiser_series(images):
        return []
    return [*thickness_warnings(series_id, images, limit_mm), *gap_warnings(series_id, images)]
