"""Reading a pseudonymised object's DICOM header, and writing it as DICOM JSON.

:func:`read_header` parses an object's data set up to (not including) its
pixel data, straight from the decrypting reader: only the segments holding
the header are decrypted, nothing is written anywhere, and at most
:data:`HEADER_LIMIT` bytes are held. :func:`dicom_json` renders a data set
in the DICOM JSON model (PS3.18 Annex F) without bulk data: binary values
longer than :data:`INLINE_LIMIT` bytes (overlays, icons, encapsulated
documents) are left out rather than inlined.

Only pseudonymised objects are read here (the callers name them from the
pseudonymised catalog); their headers are what the engineers receive anyway.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO

import pydicom
from pydicom.dataset import Dataset

from crypto.errors import CryptoError
from vault.downloads import MemberOpener
from vault.errors import InvalidInput, VaultError
from vault.objects import StoredObject

HEADER_LIMIT = 16 * 1024 * 1024
INLINE_LIMIT = 4096
_READ = 64 * 1024
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})


class _Rewindable(io.RawIOBase):
    """A forward-only stream made seekable over what has been read (for pydicom's peeks)."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._seen = bytearray()
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def _fill(self, upto: int) -> None:
        while len(self._seen) < upto:
            data = self._source.read(max(upto - len(self._seen), _READ))
            if not data:
                return
            self._seen += data
            if len(self._seen) > HEADER_LIMIT:
                raise InvalidInput("the object's header is larger than this service reads")

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        self._fill(self._position + len(buffer))
        got = max(min(len(buffer), len(self._seen) - self._position), 0)
        buffer[:got] = self._seen[self._position : self._position + got]
        self._position += got
        return got

    def unread(self) -> bytes:
        """What was read from the source past the current position (handed on to a caller)."""
        return bytes(self._seen[self._position :])

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            self._fill(HEADER_LIMIT + 1)
            base = len(self._seen)
        else:
            base = self._position if whence == io.SEEK_CUR else 0
        self._position = max(base + offset, 0)
        return self._position


def read_header(source: BinaryIO) -> Dataset:
    """The data set (and file meta) of the Part 10 stream ``source``, without pixel data.

    Raises:
        InvalidInput: the header is unreadable or larger than :data:`HEADER_LIMIT`.
    """
    return read_header_and_rest(source)[0]


def read_header_and_rest(source: BinaryIO) -> tuple[Dataset, bytes]:
    """The header of ``source`` and the bytes already read past it (``source`` continues them).

    The header ends where the pixel data element starts (or at the end), so
    those bytes begin with that element: :mod:`vault.pixel_data` reads on.

    Raises:
        InvalidInput: the header is unreadable or larger than :data:`HEADER_LIMIT`.
    """
    rewindable = _Rewindable(source)
    try:
        dataset = pydicom.dcmread(rewindable, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, EOFError, ValueError) as exc:
        raise InvalidInput("the stored object's header could not be read") from exc
    return dataset, rewindable.unread()


def header_of(open_member: MemberOpener, stored: StoredObject) -> Dataset:
    """The header of ``stored``, opened with ``open_member`` (a decrypting opener).

    Raises:
        IntegrityError: the segments holding the header are tampered with.
        InvalidInput: the header cannot be parsed.
    """
    with open_member(stored) as source:
        return read_header(source)


def header_or_none(open_member: MemberOpener, stored: StoredObject) -> Dataset | None:
    """The header of ``stored``, or None if it cannot be read (tampered, missing, unparsable).

    For listings and searches, where one damaged object must not hide the
    others; retrievals use :func:`header_of` and fail instead.
    """
    try:
        return header_of(open_member, stored)
    except (CryptoError, VaultError):
        return None


def _drop_bulk(dataset: Dataset) -> None:
    for element in list(dataset):
        if element.VR == "SQ":
            for item in element.value:
                _drop_bulk(item)
        elif element.VR in _BINARY_VRS and len(element.value or b"") > INLINE_LIMIT:
            del dataset[element.tag]


def dicom_json(dataset: Dataset) -> dict[str, Any]:
    """``dataset`` in the DICOM JSON model, bulk data left out (see module docstring)."""
    _drop_bulk(dataset)
    return dataset.to_json_dict(suppress_invalid_tags=True)


@dataclass(frozen=True)
class DeidMarks:
    """What a pseudonymised header says about its own de-identification (PS3.15 E.1.1)."""

    date_shifted: bool | None  # Longitudinal Temporal Information Modified is MODIFIED
    identity_removed: bool | None  # Patient Identity Removed is YES
    methods: tuple[str, ...]  # De-identification Method (the profile and options)


def deid_marks(dataset: Dataset) -> DeidMarks:
    """The de-identification marks of ``dataset`` (None where an attribute is absent)."""
    temporal = dataset.get("LongitudinalTemporalInformationModified")
    removed = dataset.get("PatientIdentityRemoved")
    methods = dataset.get("DeidentificationMethod") or ()
    if isinstance(methods, str):
        methods = (methods,)
    return DeidMarks(
        None if temporal is None else temporal == "MODIFIED",
        None if removed is None else removed == "YES",
        tuple(str(method) for method in methods),
    )
