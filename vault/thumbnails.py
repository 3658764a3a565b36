"""Thumbnails: one small greyscale PNG of an image, so people can see it is the right scan.

:func:`render_thumbnail` reads a Part 10 stream (plaintext from the one
decrypting reader, :func:`vault.objects.open_decrypted`) entirely in memory,
decodes one frame (the middle one of a multi-frame image) with pydicom's pixel
handlers (uncompressed, RLE, JPEG lossless, JPEG-LS and JPEG 2000 through
pylibjpeg), applies the modality rescale and the stored window (or a robust
2nd-98th percentile window when there is none), and scales it to fit a
square. Nothing is written to disk; the PNG carries no text chunks, so no
header attribute can leak into it.

Rendering a thumbnail holds the whole object in memory: objects larger than
``max_bytes`` are refused with :class:`ThumbnailUnavailable` rather than read.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

DEFAULT_SIZE = 160
DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class ThumbnailUnavailable(Exception):
    """This object cannot be rendered (no pixels, unsupported encoding, too large)."""


def render_thumbnail(
    source: BinaryIO, *, size: int = DEFAULT_SIZE, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """A PNG of at most ``size`` x ``size`` pixels of the image in ``source``.

    Raises:
        ThumbnailUnavailable: no image could be produced; the reason says why
            in plain words and never quotes the data.
    """
    data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ThumbnailUnavailable("the image is too large to preview")
    dataset = _dataset(data)
    try:
        frame = _frame(dataset)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # A header value that is not the number it should be; its text stays in here.
        raise ThumbnailUnavailable("the image's header cannot be used for a preview") from exc
    return _png(_to_8bit(frame), size)


def _dataset(data: bytes) -> Dataset:
    try:
        return dcmread(io.BytesIO(data))
    except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
        raise ThumbnailUnavailable("the file could not be read as DICOM") from exc


def _frame(dataset: Dataset) -> np.ndarray:
    if "PixelData" not in dataset:
        raise ThumbnailUnavailable("the file holds no image")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        pixels = dataset.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError) as exc:
        raise ThumbnailUnavailable("the image encoding cannot be previewed") from exc
    if frames > 1:
        pixels = pixels[frames // 2]
    return _modality(dataset, pixels)


def _modality(dataset: Dataset, pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 3:  # colour (rows, columns, samples): luminance
        return pixels[..., :3].astype(np.float64).mean(axis=2)
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    values = pixels.astype(np.float64) * slope + intercept
    values = _window(dataset, values)
    if dataset.get("PhotometricInterpretation") == "MONOCHROME1":
        values = values.max() - values + values.min()
    return values


def _window(dataset: Dataset, values: np.ndarray) -> np.ndarray:
    center, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    if center is None or width is None or width <= 1:
        low, high = np.percentile(values, (2, 98))
    else:
        low, high = center - width / 2, center + width / 2
    return np.clip(values, low, max(high, low + 1))


def _first(value: object) -> float | None:
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _to_8bit(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return ((values - low) * (255.0 / (high - low))).astype(np.uint8)


def _png(pixels: np.ndarray, size: int) -> bytes:
    image = Image.fromarray(pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
