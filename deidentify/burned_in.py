"""Which instances may carry identifiers in their pixels, and so are quarantined.

The profile cleans the header; it cannot read text burned into an image.
An instance is held back, with a reason, when:

* Burned In Annotation (0028,0301) is ``YES``;
* it is an encapsulated document (PDF, CDA) or 3D model file (STL, OBJ,
  MTL): its payload is a foreign format the header profile does not reach;
* an overlay is stored in the pixel data's unused high bits (retired
  practice; removing the overlay attributes leaves those bits in place);
* Burned In Annotation is absent or empty and the instance is of a kind that
  routinely carries burned-in text: ultrasound, X-ray angiography and
  fluoroscopy, secondary capture and screen captures, visible-light photos
  and video, scanned documents (see the tables below).

An explicit ``NO`` is trusted for every kind but encapsulated documents.
A DICOMDIR (a media index, not an instance) is held back too.
"""

from __future__ import annotations

from typing import Protocol

from deidentify.outcome import QuarantineReason

# Modalities that routinely carry burned-in text when nothing says otherwise.
RISKY_MODALITIES = frozenset({"US", "IVUS", "XA", "RF", "ES", "XC", "GM", "OP", "SM", "DOC", "OT"})

_SC = "1.2.840.10008.5.1.4.1.1.7"
_VL = "1.2.840.10008.5.1.4.1.1.77.1"
# SOP class UIDs (or prefixes ending with a dot) of the same risk.
RISKY_SOP_CLASSES = (
    _SC,  # Secondary Capture Image Storage
    _SC + ".",  # Multi-frame Secondary Capture (1, 2, 3, 4)
    "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
    "1.2.840.10008.5.1.4.1.1.12.1",  # X-Ray Angiographic Image Storage
    "1.2.840.10008.5.1.4.1.1.12.2",  # X-Ray Radiofluoroscopic Image Storage
    _VL + ".",  # VL endoscopic, microscopic, photographic images and video
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Whole Slide Microscopy (label images)
)

# Always held back: the payload is another file format.
DOCUMENT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.104.2",  # Encapsulated CDA
        "1.2.840.10008.5.1.4.1.1.104.3",  # Encapsulated STL
        "1.2.840.10008.5.1.4.1.1.104.4",  # Encapsulated OBJ
        "1.2.840.10008.5.1.4.1.1.104.5",  # Encapsulated MTL
    }
)

# A DICOMDIR names patients in its records and points at files by byte offset.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"

_OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
_MODALITY, _SOP_CLASS, _BURNED_IN = 0x00080060, 0x00080016, 0x00280301
_CONVERSION_TYPE, _ENCAPSULATED_DOCUMENT = 0x00080064, 0x00420011
_DIRECTORY_RECORDS = 0x00041220  # a DICOMDIR names its SOP class only in the file meta


class HeaderView(Protocol):
    """Read access to a data set's top-level values, decoded."""

    def __contains__(self, tag: int) -> bool: ...

    def text(self, tag: int) -> str:
        """The string value of ``tag``, stripped; empty if absent or not a string."""
        ...

    def number(self, tag: int) -> int | None:
        """The first value of an integer element, or ``None``."""
        ...


def _is_risky_kind(header: HeaderView, sop_class: str) -> bool:
    if header.text(_MODALITY).upper() in RISKY_MODALITIES:
        return True
    if _CONVERSION_TYPE in header:  # the SC Equipment module: a capture of something
        return True
    return any(
        sop_class == rule or (rule.endswith(".") and sop_class.startswith(rule))
        for rule in RISKY_SOP_CLASSES
    )


def _overlay_in_pixels(header: HeaderView) -> bool:
    for group in _OVERLAY_GROUPS:
        base = group << 16
        if base | 0x0100 not in header and base | 0x0102 not in header:
            continue
        if base | 0x3000 not in header or header.number(base | 0x0102) not in (0, None):
            return True
    return False


def burned_in_risk(header: HeaderView) -> QuarantineReason | None:
    """The reason the instance must be quarantined for its pixels, or ``None``."""
    sop_class = header.text(_SOP_CLASS)
    if sop_class == MEDIA_STORAGE_DIRECTORY or _DIRECTORY_RECORDS in header:
        return QuarantineReason("directory", "a DICOMDIR is an index, not an instance")
    if sop_class in DOCUMENT_SOP_CLASSES or _ENCAPSULATED_DOCUMENT in header:
        return QuarantineReason(
            "encapsulated-document", "encapsulated document or model: not de-identified"
        )
    annotation = header.text(_BURNED_IN).upper()
    if annotation == "YES":
        return QuarantineReason("burned-in-annotation", "the instance declares burned-in text")
    if _overlay_in_pixels(header):
        return QuarantineReason("overlay-in-pixels", "an overlay is stored in the pixel data")
    if not annotation and _is_risky_kind(header, sop_class):
        return QuarantineReason(
            "burned-in-risk", "this kind of image often carries burned-in text and none is declared"
        )
    return None
