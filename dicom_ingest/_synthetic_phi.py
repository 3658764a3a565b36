"""The synthetic patient and the planting of its identifiers into a dataset.

:class:`SyntheticPatient` holds distinctive identifiers (names, IDs, dates,
times, address, phone, site and staff names); :func:`plant_instance_phi` puts
them in every place PS3.15 Table E.1-1 covers: descriptions and comments,
other patient IDs and names, staff and institution attributes, request and
referenced sequences (a name inside an item of an item), private blocks (at
top level and inside a sequence item), overlays and curves. The values are
chosen so that any surviving trace is found by a plain byte search.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import ClassVar

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

_PRIVATE_CREATOR = "DV SYNTH PRIVATE"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root: test data only
_SYLLABLES = ("quux", "zeph", "varn", "oblo", "trim", "kesh", "vald", "orsy", "pemb", "wyth")


@dataclass(frozen=True)
class SyntheticPatient:
    """A made-up patient, study and site, every identifier distinctive.

    Sex, age, size and weight are patient characteristics the profile may keep;
    they are not identifiers and are not in :meth:`markers`.
    """

    family_name: str = "Quuxleigh"
    given_name: str = "Marguerite"
    middle_name: str = "Ottoline"
    patient_id: str = "PQX4417093"
    issuer_of_patient_id: str = "HOSPQUUX-MRN"
    other_patient_ids: tuple[str, ...] = ("OPX5529013", "NIRPP18806")
    birth_date: str = "19610314"
    birth_time: str = "071543.2817"
    address: str = "17 Rue Zephyrine Valbonnet 69003 Lyon"
    phone: str = "+33 4 7299 1834"
    mother_birth_name: str = "Brindejonc^Armelle"
    occupation: str = "Cartographerix"
    medical_record_locator: str = "MRL-88213-QX"
    study_date: str = "20230517"
    study_time: str = "143207.4185"
    series_time: str = "143512.0731"
    acquisition_time: str = "143526.9912"
    content_time: str = "143541.3307"
    accession_number: str = "ACQX90017734"
    study_id: str = "SQX8801"
    referring_physician: str = "Vantongerloo^Basile"
    performing_physician: str = "Okonkwostraub^Ilsebeth"
    operator: str = "Featherstonehaugh^Pimbleton"
    reading_physician: str = "Delacroixmbeki^Solenne"
    requesting_physician: str = "Huxtablemoreau^Agathe"
    institution_name: str = "Clinique Quuxvalbonnet"
    institution_address: str = "88 Avenue Orsolya Pemberton 69006 Lyon"
    department: str = "Orthopaedic Imaging Wing Q7"
    station_name: str = "QXCTST0447"
    device_serial: str = "SNQX7738214"
    sex: str = "F"
    age: str = "062Y"
    size_m: float = 1.64
    weight_kg: float = 58.5

    _NOT_MARKERS: ClassVar[frozenset[str]] = frozenset({"sex", "age", "size_m", "weight_kg"})

    @property
    def dicom_name(self) -> str:
        """The Patient's Name in DICOM PN form: ``Family^Given^Middle``."""
        return f"{self.family_name}^{self.given_name}^{self.middle_name}"

    def markers(self) -> list[str]:
        """Every distinctive string planted: whole values and name components.

        PN values are listed whole and by component, so a test can search for
        each in any case and in the ``^``-separated DICOM form.
        """
        found: list[str] = [self.dicom_name]
        for f in fields(self):
            if f.name in self._NOT_MARKERS:
                continue
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            for item in values:
                found.append(item)
                found.extend(part for part in item.split("^") if "^" in item)
        return list(dict.fromkeys(m for m in found if m))

    @classmethod
    def generate(cls, seed: int) -> SyntheticPatient:
        """A different distinctive patient (and site) for each ``seed``."""
        rng = random.Random(seed)

        def word() -> str:
            return "".join(rng.choice(_SYLLABLES) for _ in range(3)).capitalize()

        def digits(n: int) -> str:
            return "".join(rng.choice("0123456789") for _ in range(n))

        return cls(
            family_name=word(),
            given_name=word(),
            middle_name=word(),
            patient_id=f"P{seed}X{digits(8)}",
            other_patient_ids=(f"OP{seed}X{digits(8)}",),
            birth_date=f"19{rng.randint(30, 99)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            birth_time=f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}31.{digits(4)}",
            address=f"{rng.randint(1, 99)} Rue {word()} {digits(5)} Lyon",
            phone=f"+33 4 {digits(4)} {digits(4)}",
            mother_birth_name=f"{word()}^{word()}",
            medical_record_locator=f"MRL-{digits(6)}-{seed}",
            study_date=f"20{rng.randint(10, 24)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            study_time=f"10{rng.randint(10, 59)}07.{digits(4)}",
            series_time=f"11{rng.randint(10, 59)}12.{digits(4)}",
            acquisition_time=f"12{rng.randint(10, 59)}26.{digits(4)}",
            content_time=f"13{rng.randint(10, 59)}41.{digits(4)}",
            accession_number=f"AC{seed}X{digits(8)}",
            study_id=f"S{seed}X{digits(4)}",
        )


def _derived_uid(base: str, purpose: str) -> str:
    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=[base, purpose])


def _name_and_ids(ds: Dataset, p: SyntheticPatient) -> None:
    ds.OtherPatientNames = f"{p.family_name}^{p.given_name}"
    ds.OtherPatientIDs = list(p.other_patient_ids)
    items = []
    for other in p.other_patient_ids:
        item = Dataset()
        item.PatientID = other
        item.IssuerOfPatientID = p.issuer_of_patient_id
        item.TypeOfPatientID = "TEXT"
        items.append(item)
    ds.OtherPatientIDsSequence = items
    ds.PatientBirthTime = p.birth_time
    ds.PatientAddress = p.address
    ds.PatientTelephoneNumbers = p.phone
    ds.PatientMotherBirthName = p.mother_birth_name
    ds.Occupation = p.occupation
    ds.MedicalRecordLocator = p.medical_record_locator
    ds.PatientComments = f"Patient {p.given_name} {p.family_name}, MRN {p.patient_id}"
    ds.AdditionalPatientHistory = f"prior knee surgery; contact {p.phone}; {p.address}"


def _descriptions(ds: Dataset, p: SyntheticPatient) -> None:
    ds.StudyDescription = f"{ds.StudyDescription} {p.family_name.upper()}"
    ds.SeriesDescription = f"{ds.SeriesDescription} {p.given_name} {p.family_name} {p.patient_id}"
    ds.ImageComments = f"Pt {p.dicom_name} MRN {p.patient_id} DOB {p.birth_date}"
    ds.ProtocolName = f"KNEE {p.family_name}"
    ds.PerformedProcedureStepID = p.study_id
    ds.PerformedProcedureStepStartDate = p.study_date
    ds.PerformedProcedureStepStartTime = p.study_time
    ds.PerformedProcedureStepDescription = f"knee CT for {p.family_name}"


def _site_and_staff(ds: Dataset, p: SyntheticPatient) -> None:
    ds.InstitutionName = p.institution_name
    ds.InstitutionAddress = p.institution_address
    ds.InstitutionalDepartmentName = p.department
    ds.StationName = p.station_name
    ds.DeviceSerialNumber = p.device_serial
    ds.OperatorsName = p.operator
    ds.PerformingPhysicianName = p.performing_physician
    ds.NameOfPhysiciansReadingStudy = p.reading_physician
    ds.PhysiciansOfRecord = p.referring_physician
    ds.ReferringPhysicianTelephoneNumbers = p.phone
    ds.InstanceCreationDate = p.study_date
    ds.InstanceCreationTime = p.content_time
    ds.AcquisitionDateTime = f"{p.study_date}{p.acquisition_time}+0200"


def _request_attributes(ds: Dataset, p: SyntheticPatient, study_uid: str) -> None:
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    referenced_study.ReferencedSOPInstanceUID = study_uid
    protocol = Dataset()
    protocol.CodeValue, protocol.CodingSchemeDesignator = "KNEE1", "99QX"
    protocol.CodeMeaning = f"knee protocol requested by {p.requesting_physician}"
    request = Dataset()
    request.RequestedProcedureID = p.accession_number
    request.ScheduledProcedureStepID = p.study_id
    request.RequestedProcedureDescription = f"CT knee {p.family_name}"
    request.ReferencedStudySequence = [referenced_study]
    request.ScheduledProtocolCodeSequence = [protocol]
    ds.RequestAttributesSequence = [request]


def _source_image(ds: Dataset, p: SyntheticPatient) -> None:
    """A retained sequence with a name two items deep and a nested private block."""
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator = "121320", "DCM"
    purpose.CodeMeaning = "Uncompressed predecessor"
    purpose.PersonName = p.requesting_physician
    source = Dataset()
    source.ReferencedSOPClassUID = CTImageStorage
    source.ReferencedSOPInstanceUID = _derived_uid(ds.SOPInstanceUID, "source")
    source.PurposeOfReferenceCodeSequence = [purpose]
    block = source.private_block(0x0011, _PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", p.patient_id)
    ds.SourceImageSequence = [source]


def _private(ds: Dataset, p: SyntheticPatient) -> None:
    block = ds.private_block(0x0009, _PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", p.dicom_name)
    block.add_new(0x02, "LO", p.patient_id)
    block.add_new(0x03, "DA", p.birth_date)
    item = Dataset()
    item.PatientName = p.dicom_name
    block.add_new(0x10, "SQ", [item])


def _overlay_and_curve(ds: Dataset, p: SyntheticPatient) -> None:
    ds.add_new(0x60000010, "US", 16)  # Overlay Rows
    ds.add_new(0x60000011, "US", 16)  # Overlay Columns
    ds.add_new(0x60000022, "LO", f"annotation {p.family_name}")  # Overlay Description
    ds.add_new(0x60000040, "CS", "G")  # Overlay Type
    ds.add_new(0x60000050, "SS", [1, 1])  # Overlay Origin
    ds.add_new(0x60000100, "US", 1)  # Overlay Bits Allocated
    ds.add_new(0x60000102, "US", 0)  # Overlay Bit Position
    ds.add_new(0x60003000, "OW", bytes(32))  # Overlay Data
    ds.add_new(0x60004000, "LT", f"drawn for {p.dicom_name}")  # Overlay Comments
    ds.add_new(0x50000005, "US", 1)  # Curve Dimensions
    ds.add_new(0x50000010, "US", 2)  # Number of Points
    ds.add_new(0x50002500, "LO", f"curve {p.family_name}")  # Curve Label
    ds.add_new(0x50003000, "OW", bytes(8))  # Curve Data


def plant_instance_phi(ds: Dataset, patient: SyntheticPatient, *, study_uid: str) -> None:
    """Plant ``patient``'s identifiers everywhere the profile covers, in place."""
    _name_and_ids(ds, patient)
    _descriptions(ds, patient)
    _site_and_staff(ds, patient)
    _request_attributes(ds, patient, study_uid)
    _source_image(ds, patient)
    _private(ds, patient)
    _overlay_and_curve(ds, patient)
    if ds.Modality == "CT":
        ds.IrradiationEventUID = _derived_uid(ds.SOPInstanceUID, "irradiation")
