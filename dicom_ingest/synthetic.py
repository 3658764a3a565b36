"""Synthetic CT and MR series for tests and benchmarks, optionally with planted PHI.

The generator yields Part-10-ready :class:`pydicom.Dataset` objects (file meta
set, Explicit VR Little Endian, int16 pixels with a phantom-like structure so
uncompressed sizes are realistic: 512 KiB per 512x512 slice). One pixel buffer
is built per series and stamped with the slice index, so a 500-slice series is
generated in a few seconds.

With ``plant_phi=True`` every place the de-identification profile covers gets
an identifier from a :class:`SyntheticPatient` (see :mod:`dicom_ingest._synthetic_phi`);
:meth:`SyntheticPatient.markers` lists the planted strings, so a test can
search the output bytes for any trace of them.

Command line (for benchmarks)::

    python -m dicom_ingest.synthetic OUTDIR --slices 500 [--phi] [--mr]

Example:
    >>> datasets = list(make_ct_series(3, rows=64, columns=64))
    >>> len(encode(datasets[0])) > 64 * 64 * 2
    True
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from dicom_ingest._synthetic_phi import SyntheticPatient, plant_instance_phi

__all__ = [
    "SyntheticPatient",
    "encode",
    "make_ct_series",
    "make_mr_series",
    "write_series",
]

_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root: test data only
_HU_OFFSET = 1024


def _phantom(rows: int, columns: int, seed: int) -> np.ndarray:
    """A body-like phantom in stored values (HU + 1024): air, soft tissue, bone ring."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : columns * 1j]
    radius = np.sqrt((x / 0.85) ** 2 + (y / 0.7) ** 2)
    hu = np.full((rows, columns), -1000.0)
    hu[radius < 1.0] = 40.0
    hu[(radius > 0.35) & (radius < 0.45)] = 900.0
    hu += rng.normal(0.0, 12.0, size=(rows, columns))
    stored = np.clip(hu + _HU_OFFSET, 0, 4095)
    return stored.astype("<i2")


def _uid(seed_parts: Sequence[object] | None) -> UID:
    if seed_parts is None:
        return generate_uid(prefix=_UID_PREFIX)
    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=[str(p) for p in seed_parts])


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "DV_SYNTH_1"
    return meta


class _SeriesPlan:
    """Everything constant within one series: UIDs, patient, geometry, pixels."""

    def __init__(
        self,
        *,
        modality: str,
        rows: int,
        columns: int,
        patient: SyntheticPatient,
        seed: int,
        slice_thickness: float,
        study_uid: str | None,
        frame_of_reference_uid: str | None,
        series_number: int,
        plant_phi: bool,
        references: Sequence[Dataset],
    ) -> None:
        deterministic = [patient.patient_id, seed, modality, series_number]
        self.modality = modality
        self.sop_class = CTImageStorage if modality == "CT" else MRImageStorage
        self.rows, self.columns = rows, columns
        self.patient = patient
        self.seed = seed
        self.slice_thickness = slice_thickness
        self.study_uid = study_uid or _uid([*deterministic[:2], "study"])
        self.series_uid = _uid([*deterministic, "series"])
        self.frame_uid = frame_of_reference_uid or _uid([*deterministic[:2], "frame"])
        self.series_number = series_number
        self.plant_phi = plant_phi
        self.references = tuple(references)
        self.pixels = _phantom(rows, columns, seed)
        self.pixel_spacing = [round(350.0 / columns, 6)] * 2

    def instance_uid(self, index: int) -> UID:
        return _uid([self.series_uid, index])


def _patient_study_series(ds: Dataset, plan: _SeriesPlan) -> None:
    p = plan.patient
    ds.PatientName = p.dicom_name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = p.issuer_of_patient_id
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = p.age
    ds.PatientSize = p.size_m
    ds.PatientWeight = p.weight_kg
    ds.StudyInstanceUID = plan.study_uid
    ds.StudyDate = p.study_date
    ds.StudyTime = p.study_time
    ds.ReferringPhysicianName = p.referring_physician if plan.plant_phi else ""
    ds.StudyID = p.study_id if plan.plant_phi else "1"
    ds.AccessionNumber = p.accession_number if plan.plant_phi else ""
    ds.StudyDescription = "CT KNEE LEFT" if plan.modality == "CT" else "MR KNEE LEFT"
    ds.Modality = plan.modality
    ds.SeriesInstanceUID = plan.series_uid
    ds.SeriesNumber = plan.series_number
    ds.SeriesDate = p.study_date
    ds.SeriesTime = p.series_time
    ds.SeriesDescription = f"AXIAL {plan.slice_thickness:g}MM"
    ds.BodyPartExamined = "KNEE"
    ds.PatientPosition = "FFS"
    ds.FrameOfReferenceUID = plan.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "DICOM-VAULT SYNTHETIC"
    ds.ManufacturerModelName = "PHANTOM"
    ds.SoftwareVersions = "1.0"


def _image(ds: Dataset, plan: _SeriesPlan, index: int) -> None:
    p = plan.patient
    z = -index * plan.slice_thickness
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = p.study_date
    ds.AcquisitionTime = p.acquisition_time
    ds.ContentDate = p.study_date
    ds.ContentTime = p.content_time
    ds.ImagePositionPatient = [-175.0, -175.0, round(z, 6)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = plan.slice_thickness
    ds.SliceLocation = round(z, 6)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = plan.rows, plan.columns
    ds.PixelSpacing = plan.pixel_spacing
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.BurnedInAnnotation = "NO"
    if plan.modality == "CT":
        ds.KVP = 120
        ds.RescaleIntercept = -_HU_OFFSET
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 400, 2000
    else:
        ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.RepetitionTime, ds.EchoTime = 500.0, 15.0
        ds.EchoTrainLength, ds.MagneticFieldStrength = 1, 1.5
    pixels = plan.pixels.copy()
    pixels[0, : min(8, plan.columns)] = index % 4096  # each slice differs
    ds.PixelData = pixels.tobytes()


def _references(ds: Dataset, plan: _SeriesPlan, index: int) -> None:
    items = []
    for ref in plan.references:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.SOPClassUID
        item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
        items.append(item)
    if index > 0:
        item = Dataset()
        item.ReferencedSOPClassUID = plan.sop_class
        item.ReferencedSOPInstanceUID = plan.instance_uid(index - 1)
        items.append(item)
    if items:
        ds.ReferencedImageSequence = items


def _instance(plan: _SeriesPlan, index: int) -> Dataset:
    sop_instance = plan.instance_uid(index)
    ds = Dataset()
    ds.file_meta = _file_meta(plan.sop_class, sop_instance)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = plan.sop_class
    ds.SOPInstanceUID = sop_instance
    _patient_study_series(ds, plan)
    _image(ds, plan, index)
    _references(ds, plan, index)
    if plan.plant_phi:
        plant_instance_phi(ds, plan.patient, study_uid=plan.study_uid)
    return ds


def make_ct_series(
    n_slices: int,
    *,
    rows: int = 512,
    columns: int = 512,
    patient: SyntheticPatient | None = None,
    seed: int = 0,
    slice_thickness: float = 1.0,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    plant_phi: bool = False,
    references: Sequence[Dataset] = (),
    modality: str = "CT",
) -> Iterator[Dataset]:
    """Yield ``n_slices`` CT Image Storage datasets of one series.

    Parameters
    ----------
    n_slices:
        Number of instances; ImagePositionPatient steps by ``slice_thickness``.
    rows, columns:
        Matrix size; pixels are signed 16-bit, stored value = HU + 1024.
    patient:
        Whose study it is; a fixed default patient if ``None``.
    seed:
        Makes UIDs (and noise) deterministic: same arguments, same series.
    study_uid, frame_of_reference_uid:
        Share a study or frame of reference across series; derived if ``None``.
    plant_phi:
        Plant the patient's identifiers in every place the profile covers.
    references:
        Instances every slice refers to in ReferencedImageSequence (e.g. a
        scout from another series); each slice also refers to its predecessor.
    modality:
        ``"CT"`` or ``"MR"`` (see :func:`make_mr_series`).

    Returns
    -------
    An iterator of datasets, each with ``file_meta`` set.
    """
    if n_slices < 0:
        raise ValueError("n_slices must not be negative")
    if modality not in {"CT", "MR"}:
        raise ValueError("modality must be CT or MR")
    plan = _SeriesPlan(
        modality=modality,
        rows=rows,
        columns=columns,
        patient=patient or SyntheticPatient(),
        seed=seed,
        slice_thickness=slice_thickness,
        study_uid=study_uid,
        frame_of_reference_uid=frame_of_reference_uid,
        series_number=series_number,
        plant_phi=plant_phi,
        references=references,
    )
    for index in range(n_slices):
        yield _instance(plan, index)


def make_mr_series(n_slices: int, **kwargs: object) -> Iterator[Dataset]:
    """Like :func:`make_ct_series`, with MR Image Storage instances."""
    return make_ct_series(n_slices, modality="MR", **kwargs)  # type: ignore[arg-type]


def encode(ds: Dataset) -> bytes:
    """The Part 10 file bytes of ``ds``: 128-byte preamble, ``DICM``, file meta, data set."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_series(directory: Path, datasets: Iterable[Dataset]) -> list[Path]:
    """Write each dataset as ``IM000001.dcm``, ``IM000002.dcm``... under ``directory``.

    File names carry no PHI. Returns the paths written, in order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, ds in enumerate(datasets, start=1):
        path = directory / f"IM{number:06d}.dcm"
        path.write_bytes(encode(ds))
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Write one synthetic series to a directory (for benchmarks)."""
    parser = argparse.ArgumentParser(prog="python -m dicom_ingest.synthetic")
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--columns", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phi", action="store_true", help="plant identifiers everywhere")
    parser.add_argument("--mr", action="store_true", help="MR instead of CT")
    args = parser.parse_args(argv)
    series = make_ct_series(
        args.slices,
        rows=args.rows,
        columns=args.columns,
        seed=args.seed,
        plant_phi=args.phi,
        modality="MR" if args.mr else "CT",
    )
    paths = write_series(args.outdir, series)
    print(f"wrote {len(paths)} instances to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
