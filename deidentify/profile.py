"""The de-identification profile: which PS3.15 Annex E options apply, and their codes.

A :class:`Profile` is the Basic Application Level Confidentiality Profile plus
a typed set of options. Its defaults are the vault's: Retain Longitudinal
Temporal Information with Modified Dates, Retain Patient Characteristics
(implant sizing needs sex, age, size and weight) and Clean Descriptors; all
private attributes removed unless named in ``private_safelist``.

Each option carries its PS3.16 CID 7050 code, recorded in the output's
De-identification Method Code Sequence (0012,0064).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from vault.settings import DeidentifySettings


class Option(StrEnum):
    """Table E.1-1 option columns, named as in ``data/table_e1_1.json``."""

    RETAIN_SAFE_PRIVATE = "retain_safe_private"
    RETAIN_UIDS = "retain_uids"
    RETAIN_DEVICE_IDENTITY = "retain_device_identity"
    RETAIN_INSTITUTION_IDENTITY = "retain_institution_identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
    RETAIN_FULL_DATES = "retain_full_dates"
    RETAIN_MODIFIED_DATES = "retain_modified_dates"
    CLEAN_DESCRIPTORS = "clean_descriptors"


class MethodCode(NamedTuple):
    """A CID 7050 (De-identification Method) code."""

    value: str
    meaning: str


BASIC_PROFILE_CODE = MethodCode("113100", "Basic Application Confidentiality Profile")

# PS3.16 CID 7050. Note: 113106 is the *Full* Dates option, 113107 Modified Dates.
METHOD_CODES: dict[Option, MethodCode] = {
    Option.CLEAN_DESCRIPTORS: MethodCode("113105", "Clean Descriptors Option"),
    Option.RETAIN_FULL_DATES: MethodCode(
        "113106", "Retain Longitudinal Temporal Information Full Dates Option"
    ),
    Option.RETAIN_MODIFIED_DATES: MethodCode(
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"
    ),
    Option.RETAIN_PATIENT_CHARACTERISTICS: MethodCode(
        "113108", "Retain Patient Characteristics Option"
    ),
    Option.RETAIN_DEVICE_IDENTITY: MethodCode("113109", "Retain Device Identity Option"),
    Option.RETAIN_UIDS: MethodCode("113110", "Retain UIDs Option"),
    Option.RETAIN_SAFE_PRIVATE: MethodCode("113111", "Retain Safe Private Option"),
    Option.RETAIN_INSTITUTION_IDENTITY: MethodCode("113112", "Retain Institution Identity Option"),
}


class PrivateTag(NamedTuple):
    """A private attribute named by its creator, group and element offset.

    ``PrivateTag("SIEMENS CT VA0  COAD", 0x0019, 0x23)`` is element
    (0019,xx23) of whichever block (0019,00xx) that creator reserved.
    """

    creator: str
    group: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> PrivateTag:
        """Parse ``"CREATOR|gggg|ee"`` (hex group and element offset).

        Raises
        ------
        ValueError
            If the text is not in that form or the group is not odd.
        """
        creator, group, offset = text.rsplit("|", 2)
        tag = cls(creator.strip(), int(group, 16), int(offset, 16))
        if tag.group % 2 == 0 or not 0 <= tag.offset <= 0xFF or not tag.creator:
            raise ValueError("a private tag is CREATOR|gggg|ee with an odd group")
        return tag


@dataclass(frozen=True)
class Profile:
    """The Basic Profile and the options applied on top of it.

    Parameters
    ----------
    retain_modified_dates:
        Shift dates and times by a per-patient offset (intervals stay true).
    retain_full_dates:
        Keep dates and times unchanged (exclusive with ``retain_modified_dates``).
    retain_patient_characteristics:
        Keep sex, age, size, weight and the like.
    clean_descriptors:
        Keep descriptions and comments, reduced to known technical and
        anatomical terms (see :mod:`deidentify.descriptors`); never verbatim.
    retain_device_identity, retain_institution_identity:
        Keep device and institution identifiers (off: they point at the site).
    private_safelist:
        Private attributes to keep; everything else private is removed.

    Raises
    ------
    ValueError
        If both date options are chosen.
    """

    retain_modified_dates: bool = True
    retain_full_dates: bool = False
    retain_patient_characteristics: bool = True
    clean_descriptors: bool = True
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    private_safelist: frozenset[PrivateTag] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.retain_modified_dates and self.retain_full_dates:
            raise ValueError("choose one of retain_modified_dates and retain_full_dates")

    @classmethod
    def from_settings(cls, settings: DeidentifySettings) -> Profile:
        """The profile configured in ``Settings.deidentify``.

        Raises
        ------
        ValueError
            If a safelist entry is malformed or both date options are set.
        """
        return cls(
            retain_modified_dates=settings.retain_modified_dates,
            retain_full_dates=settings.retain_full_dates,
            retain_patient_characteristics=settings.retain_patient_characteristics,
            clean_descriptors=settings.clean_descriptors,
            retain_device_identity=settings.retain_device_identity,
            retain_institution_identity=settings.retain_institution_identity,
            private_safelist=frozenset(PrivateTag.parse(t) for t in settings.private_safelist),
        )

    @property
    def options(self) -> tuple[Option, ...]:
        """The options in force, in Table E.1-1 column order."""
        chosen = {
            Option.RETAIN_SAFE_PRIVATE: bool(self.private_safelist),
            Option.RETAIN_DEVICE_IDENTITY: self.retain_device_identity,
            Option.RETAIN_INSTITUTION_IDENTITY: self.retain_institution_identity,
            Option.RETAIN_PATIENT_CHARACTERISTICS: self.retain_patient_characteristics,
            Option.RETAIN_FULL_DATES: self.retain_full_dates,
            Option.RETAIN_MODIFIED_DATES: self.retain_modified_dates,
            Option.CLEAN_DESCRIPTORS: self.clean_descriptors,
        }
        return tuple(option for option, on in chosen.items() if on)

    @property
    def method_codes(self) -> tuple[MethodCode, ...]:
        """CID 7050 codes of the profile and its options, for (0012,0064)."""
        return (BASIC_PROFILE_CODE, *(METHOD_CODES[o] for o in self.options))
