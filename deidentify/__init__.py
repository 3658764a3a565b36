"""De-identification of DICOM instances: PS3.15 Annex E, keyed pseudonyms, quarantine.

The front door is :class:`Deidentifier` (a :class:`Profile` and the
deployment's :class:`PseudonymKeys`); :func:`pseudonym` derives a patient's
pseudonym from the patient ID and its :class:`PatientIdDomain`, which a
:class:`DomainResolver` gives for a study's organisation and issuer;
:mod:`deidentify.offline` applies the engine to files and folders.
"""

from deidentify.engine import Deidentifier
from deidentify.outcome import AttributeChange, DeidOutcome, QuarantineReason, ReportAction
from deidentify.profile import Option, PrivateTag, Profile
from deidentify.pseudonyms import DomainResolver, PatientIdDomain, PseudonymKeys, pseudonym

__all__ = [
    "AttributeChange",
    "DeidOutcome",
    "Deidentifier",
    "DomainResolver",
    "Option",
    "PatientIdDomain",
    "PrivateTag",
    "Profile",
    "PseudonymKeys",
    "QuarantineReason",
    "ReportAction",
    "pseudonym",
]
