"""Thumbnails: a small PNG of the image, for the upload summary and the engineer page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword

from dicom_ingest.synthetic import encode, make_ct_series
from vault.thumbnails import ThumbnailUnavailable, render_thumbnail

# Real files of several encodings from pydicom's test data.
ENCODED = {
    "uncompressed CT": "CT_small.dcm",
    "RLE lossless": "MR_small_RLE.dcm",
    "JPEG lossless process 14": "JPEG-LL.dcm",
    "JPEG-LS lossless": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG 2000 lossless": "MR_small_jp2klossless.dcm",
    "multi-frame": "emri_small.dcm",
}


def _png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_a_synthetic_ct_slice_renders_as_a_png_that_fits_the_requested_square() -> None:
    slice_ = next(iter(make_ct_series(1, rows=128, columns=128)))
    image = _png(render_thumbnail(io.BytesIO(encode(slice_)), size=96))
    assert image.format == "PNG"
    assert max(image.size) == 96
    assert image.mode == "L"
    assert np.asarray(image).std() > 0  # not a blank square


@pytest.mark.parametrize("name", ENCODED.values(), ids=ENCODED.keys())
def test_every_lossless_encoding_renders(name: str) -> None:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as source:
        image = _png(render_thumbnail(source, size=64))
    assert max(image.size) == 64
    assert np.asarray(image).std() > 0


def test_the_png_carries_no_text_from_the_header() -> None:
    path = get_testdata_file("CT_small.dcm")
    name = str(dcmread(path).PatientName).encode()
    with open(path, "rb") as source:
        data = render_thumbnail(source)
    assert name not in data
    assert b"tEXt" not in data and b"iTXt" not in data and b"zTXt" not in data


def test_a_file_without_pixels_is_refused_in_plain_words() -> None:
    slice_ = next(iter(make_ct_series(1, rows=64, columns=64)))
    del slice_.PixelData
    with pytest.raises(ThumbnailUnavailable, match="holds no image"):
        render_thumbnail(io.BytesIO(encode(slice_)))


def test_non_dicom_bytes_are_refused() -> None:
    with pytest.raises(ThumbnailUnavailable, match="could not be read as DICOM"):
        render_thumbnail(io.BytesIO(b"not a dicom file" * 100))


def test_an_object_above_the_memory_limit_is_not_read() -> None:
    slice_ = next(iter(make_ct_series(1, rows=64, columns=64)))
    with pytest.raises(ThumbnailUnavailable, match="too large"):
        render_thumbnail(io.BytesIO(encode(slice_)), max_bytes=1024)


@pytest.mark.parametrize("keyword", ["NumberOfFrames", "RescaleSlope", "RescaleIntercept"])
def test_a_header_number_that_is_not_a_number_is_refused_without_quoting_it(
    keyword: str,
) -> None:
    slice_ = next(iter(make_ct_series(1, rows=64, columns=64)))
    marker = f"PHIMARK-{keyword}"
    # written as text (LO), as a damaged file would carry it
    slice_.add_new(tag_for_keyword(keyword), "LO", marker)
    data = encode(slice_)
    assert marker.encode() in data
    with pytest.raises(ThumbnailUnavailable, match="header cannot be used") as refused:
        render_thumbnail(io.BytesIO(data))
    assert marker not in str(refused.value)
