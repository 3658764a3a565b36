"""Whether a resent instance is the instance already stored, when their bytes differ.

A resend with the stored file's exact bytes is a duplicate (the pipeline
compares SHA-256 digests). Two files can hold the same instance in different
bytes, though, and refusing those as conflicts would refuse real senders:

- the file meta differs: a study uploaded from a CD keeps the writer's meta
  (implementation class, source AE title), while the C-STORE receiver writes
  its own, so the same instance pushed by the PACS after an upload differs in
  its first few hundred bytes only;
- the transfer syntax differs: a PACS resends what it stored in Explicit VR in
  Implicit VR on another association, or compressed losslessly.

:func:`same_instance` answers for two whole Part 10 files held in memory:
the data sets' bytes after the file meta when the transfer syntax is the
same; otherwise every element (nested sequences included) equal in value and,
for the pixels, the decoded frames equal. The caller bounds the sizes it
compares (:data:`COMPARE_LIMIT_BYTES`); anything larger, or anything that
cannot be decoded, is not the same instance, so a real conflict is never
taken for a resend.
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble

# The largest resend held in memory for the comparison (each resend being
# compared holds this much at most, so concurrent ones stay bounded): a CT or
# MR slice is a few hundred kilobytes; a larger object that differs from the
# stored one in its bytes stays a conflict.
COMPARE_LIMIT_BYTES = 16 << 20

# What reading or decoding either file may raise: then it is not the same instance.
_UNREADABLE = (
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
)


def same_instance(stored: bytes, received: bytes) -> bool:
    """True if the two Part 10 files hold the same data set (see the module docstring)."""
    try:
        stored_syntax, stored_body = _split(stored)
        received_syntax, received_body = _split(received)
        if stored_syntax == received_syntax:
            return stored_body == received_body
        return _same_elements(dcmread(io.BytesIO(stored)), dcmread(io.BytesIO(received)))
    except _UNREADABLE:
        return False


def _split(data: bytes) -> tuple[str, bytes]:
    """A file's transfer syntax UID and the bytes of its data set (after the file meta)."""
    source = io.BytesIO(data)
    read_preamble(source, False)
    meta = _read_file_meta_info(source)
    return str(meta.TransferSyntaxUID), data[source.tell() :]


def _same_elements(stored: Dataset, received: Dataset) -> bool:
    tags = set(stored.keys()) | set(received.keys())
    tags.discard(_PIXEL_DATA)
    if any(tag not in stored or tag not in received for tag in tags):
        return False
    if any(stored[tag].value != received[tag].value for tag in tags):
        return False
    return _same_pixels(stored, received)


def _same_pixels(stored: Dataset, received: Dataset) -> bool:
    if (_PIXEL_DATA in stored) != (_PIXEL_DATA in received):
        return False
    if _PIXEL_DATA not in stored:
        return True
    return bool(np.array_equal(stored.pixel_array, received.pixel_array))


_PIXEL_DATA = 0x7FE00010
