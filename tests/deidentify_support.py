"""Shared helpers for the de-identification tests: a test MacKey, leak searches, a
burned-in capture to be quarantined."""

from __future__ import annotations

import hashlib
import hmac
import io

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, UID_dictionary, generate_uid

from deidentify import Deidentifier, Profile, PseudonymKeys
from deidentify.table import load_table
from dicom_ingest.synthetic import encode


class FixedMacKey:
    """A test-only MacKey: HMAC-SHA256 under a fixed key (never used outside tests)."""

    def __init__(self, secret: bytes = b"dicom-vault test pseudonym key!!", key_id: str = "test-1"):
        self._secret = secret
        self.key_id = key_id

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()


def make_engine(profile: Profile | None = None, key: FixedMacKey | None = None) -> Deidentifier:
    return Deidentifier(profile or Profile(), PseudonymKeys(key or FixedMacKey()))


def variants(marker: str) -> set[str]:
    """Spellings a leaked identifier could take: PN and free-text forms, any case."""
    forms = {marker, marker.replace("^", " "), marker.replace(" ", "^")}
    if "^" in marker:
        parts = [p for p in marker.split("^") if p]
        forms.add(", ".join(parts))
        forms.add(" ".join(reversed(parts)))
    return {f.lower() for f in forms if f}


def leaks(output: bytes, markers: list[str]) -> list[str]:
    """Markers found in ``output`` in any ASCII case, Latin-1 or UTF-16 encoded."""
    haystack = output.lower()
    found = []
    for marker in markers:
        for form in variants(marker):
            encodings = [form.encode("latin-1")]
            encodings += [form.encode("utf-16-le"), form.encode("utf-16-be")]
            if any(e in haystack for e in encodings):
                found.append(form)
    return found


def uids_of(ds: Dataset) -> set[str]:
    """Every UID anywhere in ``ds`` (file meta included) held by an attribute
    Table E.1-1 says to replace (``U``): instance identity, not software or
    class identity such as the Implementation Class or Creator-Version UID.
    Values of eight characters or fewer (``"0"`` in one test file) are not
    searchable as bytes and are left out.
    """
    replaced = {int(r.tag, 16) for r in load_table() if "x" not in r.tag and r.basic == "U"}
    found: set[str] = set()

    def visit(_: Dataset, elem: DataElement) -> None:
        if elem.tag in replaced and elem.VR == "UI" and elem.value:
            values = elem.value if isinstance(elem.value, list) else [elem.value]
            found.update(str(v) for v in values if str(v) not in UID_dictionary and len(str(v)) > 8)

    ds.walk(visit)
    if hasattr(ds, "file_meta"):
        ds.file_meta.walk(visit)
    return found


def part10(ds: Dataset) -> bytes:
    return encode(ds)


def burned_in_capture(like: Dataset) -> Dataset:
    """A Secondary Capture of ``like``'s study saying Burned In Annotation YES."""
    ds = pydicom.dcmread(io.BytesIO(encode(like)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.BurnedInAnnotation = "YES"
    return ds
