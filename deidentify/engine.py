"""The de-identification engine: PS3.15 Annex E applied to one instance.

:class:`Deidentifier` takes a :class:`~deidentify.profile.Profile` and the
deployment's :class:`~deidentify.pseudonyms.PseudonymKeys`. For each
instance it first checks for burned-in text (:mod:`deidentify.burned_in`,
quarantine), then walks the encoded data set applying Table E.1-1 as the
profile resolves it (:mod:`deidentify._walk`), replaces the patient's name and
ID by the pseudonym (of the patient ID in the domain the caller's
:class:`~deidentify.pseudonyms.DomainResolver` gives, which also keys the date
shift), rebuilds the file meta around the new SOP Instance UID, and records
what was done in Patient Identity Removed (0012,0062), De-identification
Method (0012,0063), its Code Sequence (0012,0064) and Longitudinal Temporal
Information Modified (0028,0303). Last, it checks that
no identifier of the patient is left in the result (:mod:`deidentify.residual`,
quarantine).

Example
-------
>>> engine = Deidentifier(Profile(), PseudonymKeys(provider.mac_key("pseudonym")))  # doctest: +SKIP
>>> rule = DomainResolver(organisation_id, registered_issuers)  # doctest: +SKIP
>>> outcome = engine.deidentify_bytes(part10_bytes, domains=rule)  # doctest: +SKIP
>>> outcome.encoded if outcome.ok else outcome.quarantine.code  # doctest: +SKIP
"""

from __future__ import annotations

import io
import struct
from datetime import timedelta

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from deidentify._codec import (
    DEFLATED,
    EXPLICIT_LE,
    MalformedError,
    Part10,
    Syntax,
    deflate,
    header_bytes,
    item_bytes,
    parse_part10,
)
from deidentify._values import DEFAULT_CHARSETS, LevelText, encode_value
from deidentify._walk import Chunk, Walk
from deidentify.burned_in import burned_in_risk
from deidentify.outcome import AttributeChange, DeidOutcome, QuarantineReason, ReportAction
from deidentify.profile import Profile
from deidentify.pseudonyms import NO_ORGANISATION, DomainResolver, PseudonymKeys
from deidentify.residual import identifiers_of, residual_identifier
from deidentify.table import compile_rules

IMPLEMENTATION_VERSION_NAME = "DICOMVAULT_DEID"
_PATIENT_ID, _ISSUER = 0x00100020, 0x00100021
_STUDY_UID, _SERIES_UID = 0x0020000D, 0x0020000E
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018
_MARKS = (0x00120062, 0x00120063, 0x00120064, 0x00280303)
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


class _Header(LevelText):
    """Decoded access to the top-level values of a parsed data set, numbers too."""

    def number(self, tag: int) -> int | None:
        raw = self.raw(tag)
        fmt = _NUMBER_FORMATS.get(self.by_tag[tag].vr if raw else "")
        if not raw or fmt is None or len(raw) < struct.calcsize(fmt):
            return None
        return int(struct.unpack_from(self.syntax.order + fmt, raw)[0])


class Deidentifier:
    """Applies one profile with one set of keys to any number of instances.

    Parameters
    ----------
    profile:
        The Basic Profile options in force.
    keys:
        The pseudonym key handles (pseudonyms, UIDs and date offsets).
    """

    def __init__(self, profile: Profile, keys: PseudonymKeys) -> None:
        self.profile = profile
        self.keys = keys
        self._rules = compile_rules(profile)

    def deidentify_bytes(
        self, data: bytes, *, domains: DomainResolver = NO_ORGANISATION
    ) -> DeidOutcome:
        """De-identify one Part 10 file; the result's ``encoded`` holds the new file.

        ``domains`` resolves the patient ID's domain (the study's organisation
        and the registered issuers); without it an ID with no issuer is
        ``unaffiliated``. Input that is not well-formed DICOM is quarantined with a reason
        (``unreadable``), never passed on and never raised.
        """
        try:
            part10 = parse_part10(data)
        except MalformedError:
            return DeidOutcome(quarantine=QuarantineReason("unreadable", "not well-formed DICOM"))
        header = _Header(part10.buffer, part10.dataset)
        pseudonym = self._pseudonym(header, domains)
        reason = burned_in_risk(header)
        if reason is not None:
            return DeidOutcome(quarantine=reason, pseudonym=pseudonym)
        walk = Walk(
            part10.buffer,
            self._rules,
            self.profile.private_safelist,
            self.keys.uid,
            pseudonym,
            self._offset(header, domains),
        )
        try:
            chunks = walk.level(part10.dataset)
        except MalformedError:
            return DeidOutcome(
                quarantine=QuarantineReason("unreadable", "malformed element values"),
                pseudonym=pseudonym,
            )
        pieces = self._with_marks(chunks, part10.dataset.syntax, walk.report)
        meta = self._file_meta(part10, header, walk.report)
        if part10.transfer_syntax == DEFLATED:
            pieces = [deflate(b"".join(pieces))]
        encoded = b"".join([bytes(128), b"DICM", meta, *pieces])
        leaked = residual_identifier(encoded, identifiers_of(part10), pseudonym)
        if leaked is not None:
            reason = QuarantineReason(
                "residual-identifier", f"an identifier of the patient remained in {leaked}"
            )
            return DeidOutcome(quarantine=reason, pseudonym=pseudonym)
        return DeidOutcome(
            encoded=encoded,
            report=walk.report,
            pseudonym=pseudonym,
            study_uid=self.keys.uid(header.text(_STUDY_UID)) or None,
            series_uid=self.keys.uid(header.text(_SERIES_UID)) or None,
            sop_instance_uid=self.keys.uid(header.text(_SOP_INSTANCE)) or None,
        )

    def deidentify(self, ds: Dataset, *, domains: DomainResolver = NO_ORGANISATION) -> DeidOutcome:
        """De-identify a pydicom dataset (left unchanged); see :meth:`deidentify_bytes`.

        The dataset is encoded first (with its ``file_meta``, or Explicit VR
        Little Endian if it has none) so both entry points share one engine.
        """
        buffer = io.BytesIO()
        original_meta = getattr(ds, "file_meta", None)
        try:
            if original_meta is None or "TransferSyntaxUID" not in original_meta:
                ds.file_meta = _default_meta(ds, original_meta)
            pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
        finally:
            if original_meta is None:
                del ds.file_meta
            else:
                ds.file_meta = original_meta
        return self.deidentify_bytes(buffer.getvalue(), domains=domains)

    # --- identity -------------------------------------------------------

    def _pseudonym(self, header: _Header, domains: DomainResolver) -> str:
        patient_id = header.text(_PATIENT_ID)
        if patient_id:
            return self.keys.pseudonym(patient_id, domains.domain(header.text(_ISSUER)))
        return self.keys.study_pseudonym(header.text(_STUDY_UID))

    def _offset(self, header: _Header, domains: DomainResolver) -> timedelta | None:
        """The patient's date shift: the same identity as :meth:`_pseudonym`."""
        if not self.profile.retain_modified_dates:
            return None
        patient_id = header.text(_PATIENT_ID)
        if patient_id:
            return self.keys.date_offset(patient_id, domains.domain(header.text(_ISSUER)))
        return self.keys.study_date_offset(header.text(_STUDY_UID))

    # --- what the output says about itself ------------------------------

    def _with_marks(
        self, chunks: list[Chunk], syntax: Syntax, report: list[AttributeChange]
    ) -> list[bytes | memoryview]:
        """The body's pieces with (0012,0062-0064) and (0028,0303) set (PS3.15 E.1.1)."""
        kept = [chunk for chunk in chunks if chunk[0] not in _MARKS]
        codes = self.profile.method_codes
        items = b"".join(
            item_bytes(
                _element(0x00080100, "SH", code.value, syntax)
                + _element(0x00080102, "SH", "DCM", syntax)
                + _element(0x00080104, "LO", code.meaning, syntax),
                syntax,
            )
            for code in codes
        )
        if self.profile.retain_modified_dates:
            temporal = "MODIFIED"
        else:
            temporal = "UNMODIFIED" if self.profile.retain_full_dates else "REMOVED"
        marks: list[Chunk] = [
            (0x00120062, _element(0x00120062, "CS", "YES", syntax)),
            (0x00120063, _element(0x00120063, "LO", [c.meaning for c in codes], syntax)),
            (0x00120064, header_bytes(0x00120064, "SQ", len(items), syntax) + items),
            (0x00280303, _element(0x00280303, "CS", temporal, syntax)),
        ]
        for tag, _ in marks:
            report.append(
                AttributeChange(pydicom.datadict.keyword_for_tag(tag), tag, ReportAction.ADDED)
            )
        return [data for _, data in sorted(kept + marks, key=lambda c: c[0])]

    def _file_meta(self, part10: Part10, header: _Header, report: list[AttributeChange]) -> bytes:
        """New file meta: SOP class, mapped instance UID and transfer syntax only."""
        old = _Header(part10.source, part10.meta)
        sop_class = header.text(_SOP_CLASS) or old.text(0x00020002)
        instance = header.text(_SOP_INSTANCE) or old.text(0x00020003)
        elements = [_element(0x00020001, "OB", b"\0\1", EXPLICIT_LE)]
        if sop_class:
            elements.append(_element(0x00020002, "UI", sop_class, EXPLICIT_LE))
        if instance:
            elements.append(_element(0x00020003, "UI", self.keys.uid(instance), EXPLICIT_LE))
        elements += [
            _element(0x00020010, "UI", part10.transfer_syntax, EXPLICIT_LE),
            _element(0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID, EXPLICIT_LE),
            _element(0x00020013, "SH", IMPLEMENTATION_VERSION_NAME, EXPLICIT_LE),
        ]
        for element in part10.meta.elements:
            rebuilt = element.tag in {0x00020000, 0x00020001, 0x00020002, 0x00020010}
            action = ReportAction.KEPT if rebuilt else ReportAction.REMOVED
            if element.tag == 0x00020003:
                action = ReportAction.REPLACED
            name = keyword_for_tag(element.tag) or f"{element.tag:08X}"
            report.append(AttributeChange(f"file_meta.{name}", element.tag, action))
        body = b"".join(elements)
        return _element(0x00020000, "UL", len(body), EXPLICIT_LE) + body


def _element(tag: int, vr: str, value: object, syntax: Syntax) -> bytes:
    data = encode_value(value, vr, syntax, DEFAULT_CHARSETS)
    return header_bytes(tag, vr, len(data), syntax) + data


def _default_meta(ds: Dataset, old: FileMetaDataset | None) -> FileMetaDataset:
    meta = FileMetaDataset(old) if old is not None else FileMetaDataset()
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    elif little is False:
        meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return meta
