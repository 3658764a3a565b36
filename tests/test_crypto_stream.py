"""Tests of the streaming authenticated encryption format (crypto.stream).

Grouped by the behaviour they prove: round trips, refusal of every kind of
tampering, release of verified plaintext only, the writer's life cycle, the
header, sizes and limits, and the checked-in test vectors.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import inspect
import io
import json
import os
import pickle
import random
import re
import struct
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import crypto._decrypting
import crypto._encrypting
import crypto.stream
from crypto import (
    HEADER_MAX,
    CryptoError,
    DataKey,
    IntegrityError,
    UnsupportedFormat,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
    new_decrypting_stream,
    new_encrypting_stream,
    peek_key_id,
    plaintext_size,
    read_header,
)
from crypto._segment import CIPHERTEXT_SEGMENT_BYTES as CSEG
from crypto._segment import SEGMENT_BYTES as SEG
from crypto.keys import _from_material
from tests.vectors.make_vectors import fixed_encrypting_stream

AD = b"obj/ab/ab12cd34ef56ab12cd34ef56ab12cd34"
VECTORS = Path(__file__).parent / "vectors" / "stream_v1.json"


# --- helpers ------------------------------------------------------------


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic non-repeating-looking plaintext of ``size`` bytes."""
    return random.Random(seed).randbytes(size)


def encrypt(key: DataKey, plaintext: bytes, ad: bytes = AD, chunk: int | None = None) -> bytes:
    sink = io.BytesIO()
    with new_encrypting_stream(key, sink, ad) as stream:
        step = chunk or max(1, len(plaintext))
        for start in range(0, len(plaintext), step):
            stream.write(plaintext[start : start + step])
    return sink.getvalue()


def decrypt(key: DataKey, ciphertext: bytes, ad: bytes = AD, chunk: int | None = None) -> bytes:
    stream = new_decrypting_stream(key, io.BytesIO(ciphertext), ad)
    if chunk is None:
        return stream.read()
    parts = []
    while part := stream.read(chunk):
        parts.append(part)
    return b"".join(parts)


def header_size(key: DataKey) -> int:
    return ciphertext_size(0, key.key_id) - 16


def segments(key: DataKey, ciphertext: bytes) -> tuple[bytes, list[bytes]]:
    """Split a ciphertext into its header and its segments."""
    size = header_size(key)
    body = ciphertext[size:]
    return ciphertext[:size], [body[i : i + CSEG] for i in range(0, len(body), CSEG)]


def flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def released_before_failure(stream: io.RawIOBase, size: int) -> bytes:
    """Everything ``stream.read(size)`` released before it raised IntegrityError."""
    parts = []
    with pytest.raises(IntegrityError):
        while part := stream.read(size):
            parts.append(part)
    return b"".join(parts)


@pytest.fixture
def key() -> DataKey:
    return DataKey.generate()


@pytest.fixture(scope="module")
def module_key() -> DataKey:
    return DataKey.generate()


# --- round trips --------------------------------------------------------


class TestRoundTrip:
    @pytest.mark.parametrize(
        "size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 17], ids=lambda s: f"{s}B"
    )
    def test_plaintext_comes_back_bit_exact(self, key: DataKey, size: int) -> None:
        plaintext = pattern(size)
        ciphertext = encrypt(key, plaintext)
        assert len(ciphertext) == ciphertext_size(size, key.key_id)
        assert decrypt(key, ciphertext) == plaintext

    def test_empty_plaintext_is_one_empty_last_segment(self, key: DataKey) -> None:
        ciphertext = encrypt(key, b"")
        _, body = segments(key, ciphertext)
        assert [len(segment) for segment in body] == [16]
        assert decrypt(key, ciphertext) == b""

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        plaintext=st.binary(max_size=3000),
        write_chunk=st.integers(1, 97),
        read_chunk=st.integers(1, 97),
    )
    def test_small_plaintexts_survive_any_chunking(
        self, module_key: DataKey, plaintext: bytes, write_chunk: int, read_chunk: int
    ) -> None:
        ciphertext = encrypt(module_key, plaintext, chunk=write_chunk)
        assert decrypt(module_key, ciphertext, chunk=read_chunk) == plaintext

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        segments_count=st.integers(0, 2),
        offset=st.integers(-3, 3),
        write_chunk=st.integers(1000, 3 * SEG),
        read_chunk=st.integers(1000, 3 * SEG),
    )
    def test_sizes_around_segment_boundaries_survive_any_chunking(
        self,
        module_key: DataKey,
        segments_count: int,
        offset: int,
        write_chunk: int,
        read_chunk: int,
    ) -> None:
        plaintext = pattern(max(0, segments_count * SEG + offset), seed=offset)
        ciphertext = encrypt(module_key, plaintext, chunk=write_chunk)
        assert decrypt(module_key, ciphertext, chunk=read_chunk) == plaintext

    def test_readinto_and_iteration_give_the_same_plaintext(self, key: DataKey) -> None:
        plaintext = pattern(2 * SEG + 5)
        ciphertext = encrypt(key, plaintext)
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        assert b"".join(stream) == plaintext
        buffer = bytearray(len(plaintext) + 10)
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        assert stream.readinto(buffer) == len(plaintext)
        assert buffer[: len(plaintext)] == plaintext
        assert stream.readinto(buffer) == 0

    def test_a_huge_read_request_returns_what_there_is(self, key: DataKey) -> None:
        plaintext = pattern(SEG + 3)
        stream = new_decrypting_stream(key, io.BytesIO(encrypt(key, plaintext)), AD)
        assert stream.read(1 << 50) == plaintext
        assert stream.read(1 << 50) == b""

    def test_pump_functions_round_trip_and_report_plaintext_size(self, key: DataKey) -> None:
        plaintext = pattern(SEG * 5 + 3)
        encrypted, decrypted = io.BytesIO(), io.BytesIO()
        assert encrypt_stream(key, io.BytesIO(plaintext), encrypted, AD) == len(plaintext)
        encrypted.seek(0)
        assert decrypt_stream(key, encrypted, decrypted, AD) == len(plaintext)
        assert decrypted.getvalue() == plaintext

    def test_sources_without_readinto_and_with_short_reads_work(self, key: DataKey) -> None:
        class Trickle:
            """Only ``read``, and never more than 1000 bytes at a time (like a socket)."""

            def __init__(self, data: bytes) -> None:
                self._data = io.BytesIO(data)

            def read(self, size: int = -1) -> bytes:
                return self._data.read(min(size, 1000))

        plaintext = pattern(SEG + 10)
        ciphertext = encrypt(key, plaintext)
        assert new_decrypting_stream(key, Trickle(ciphertext), AD).read() == plaintext

    def test_destinations_that_write_short_get_everything(self, key: DataKey) -> None:
        class ShortWriter(io.RawIOBase):
            """A raw file that accepts at most 777 bytes per call."""

            def __init__(self) -> None:
                self.data = bytearray()

            def writable(self) -> bool:
                return True

            def write(self, data: bytes) -> int:
                taken = bytes(data[:777])
                self.data += taken
                return len(taken)

        plaintext = pattern(SEG + 1)
        sink = ShortWriter()
        with new_encrypting_stream(key, sink, AD) as stream:
            stream.write(plaintext)
        assert decrypt(key, bytes(sink.data)) == plaintext


def _chunks(total: int, seed: int) -> Iterator[bytes]:
    """``total`` bytes of deterministic data in 1 MiB chunks, never all at once."""
    block = bytearray(random.Random(seed).randbytes(1 << 20))
    for index, start in enumerate(range(0, total, len(block))):
        struct.pack_into(">Q", block, 0, index)
        yield bytes(block[: min(len(block), total - start)])


class TestLargeStream:
    def test_300_mib_streams_through_a_pipe_without_being_held_in_memory(
        self, key: DataKey
    ) -> None:
        total = 300 * 1024 * 1024
        sent = hashlib.sha256()
        received = hashlib.sha256()
        read_fd, write_fd = os.pipe()
        failures: list[BaseException] = []

        def produce() -> None:
            try:
                with open(write_fd, "wb") as pipe, new_encrypting_stream(key, pipe, AD) as out:
                    for chunk in _chunks(total, seed=7):
                        sent.update(chunk)
                        out.write(chunk)
            except BaseException as error:
                failures.append(error)

        tracemalloc.start()
        producer = threading.Thread(target=produce)
        producer.start()
        try:
            with open(read_fd, "rb", buffering=0) as pipe:
                plain = new_decrypting_stream(key, pipe, AD)
                count = 0
                for chunk in plain:
                    received.update(chunk)
                    count += len(chunk)
        finally:
            producer.join()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert failures == []
        assert count == total
        assert received.hexdigest() == sent.hexdigest()
        assert peak < 16 * 1024 * 1024, f"peak traced memory {peak} bytes"


# --- tampering ----------------------------------------------------------


class TestTamperedStream:
    def test_every_header_bit_flip_is_refused(self, key: DataKey) -> None:
        ciphertext = encrypt(key, pattern(100))
        for position in range(header_size(key)):
            with pytest.raises(IntegrityError):
                decrypt(key, flip(ciphertext, position))

    @pytest.mark.parametrize("where", ["first-body-byte", "middle", "tag", "last-byte"])
    def test_body_and_tag_bit_flips_are_refused(self, key: DataKey, where: str) -> None:
        ciphertext = encrypt(key, pattern(2 * SEG + 100))
        start = header_size(key)
        position = {
            "first-body-byte": start,
            "middle": start + CSEG + SEG // 2,
            "tag": start + CSEG - 1,
            "last-byte": len(ciphertext) - 1,
        }[where]
        with pytest.raises(IntegrityError):
            decrypt(key, flip(ciphertext, position))

    def test_reordered_segments_are_refused(self, key: DataKey) -> None:
        header, body = segments(key, encrypt(key, pattern(2 * SEG + 100)))
        with pytest.raises(IntegrityError):
            decrypt(key, header + body[1] + body[0] + body[2])

    def test_duplicated_or_dropped_segments_are_refused(self, key: DataKey) -> None:
        header, body = segments(key, encrypt(key, pattern(2 * SEG + 100)))
        for forged in (header + body[0] + body[0] + body[2], header + body[0] + body[2]):
            with pytest.raises(IntegrityError):
                decrypt(key, forged)

    def test_trailing_data_after_the_last_segment_is_refused(self, key: DataKey) -> None:
        for size in (100, SEG):
            ciphertext = encrypt(key, pattern(size))
            _, body = segments(key, ciphertext)
            for extra in (b"\x00", body[-1]):
                with pytest.raises(IntegrityError):
                    decrypt(key, ciphertext + extra)


class TestTruncatedStream:
    def test_truncation_at_every_segment_boundary_is_refused(self, key: DataKey) -> None:
        ciphertext = encrypt(key, pattern(3 * SEG + 100))
        start = header_size(key)
        for boundary in range(start, len(ciphertext), CSEG):
            with pytest.raises(IntegrityError):
                decrypt(key, ciphertext[:boundary])

    @pytest.mark.parametrize("cut", [1, 15, 16, 17, 1000, CSEG - 1])
    def test_truncation_between_boundaries_is_refused(self, key: DataKey, cut: int) -> None:
        ciphertext = encrypt(key, pattern(2 * SEG + 100))
        for end in (header_size(key) + CSEG + cut, len(ciphertext) - min(cut, 116)):
            with pytest.raises(IntegrityError):
                decrypt(key, ciphertext[:end])

    def test_truncation_inside_the_header_or_to_nothing_is_refused(self, key: DataKey) -> None:
        ciphertext = encrypt(key, b"abc")
        for end in (0, 3, 5, 6, header_size(key) - 1):
            with pytest.raises(IntegrityError):
                decrypt(key, ciphertext[:end])

    def test_a_full_last_segment_cut_off_the_stream_is_refused(self, key: DataKey) -> None:
        ciphertext = encrypt(key, pattern(2 * SEG))
        with pytest.raises(IntegrityError):
            decrypt(key, ciphertext[: header_size(key) + CSEG])


class TestObjectBinding:
    def test_ciphertexts_swapped_between_objects_are_refused(self, key: DataKey) -> None:
        plaintext = pattern(SEG + 10)
        first = encrypt(key, plaintext, ad=b"obj/aa/first")
        second = encrypt(key, plaintext, ad=b"obj/bb/second")
        with pytest.raises(IntegrityError):
            decrypt(key, first, ad=b"obj/bb/second")
        with pytest.raises(IntegrityError):
            decrypt(key, second, ad=b"obj/aa/first")

    def test_segments_spliced_between_objects_are_refused(self, key: DataKey) -> None:
        plaintext = pattern(SEG + 10)
        header_a, body_a = segments(key, encrypt(key, plaintext, ad=AD))
        header_b, body_b = segments(key, encrypt(key, plaintext, ad=AD))
        spliced = (
            header_a + body_b[0] + body_b[1],
            header_b + body_a[0] + body_a[1],
            header_a + body_a[0] + body_b[1],
        )
        for forged in spliced:
            with pytest.raises(IntegrityError):
                decrypt(key, forged)

    def test_same_plaintext_encrypts_differently_each_time(self, key: DataKey) -> None:
        plaintext = pattern(1000)
        assert encrypt(key, plaintext) != encrypt(key, plaintext)


class TestWrongKey:
    def test_a_key_with_the_same_id_but_other_bytes_is_refused(self, key: DataKey) -> None:
        impostor = _from_material(key.key_id, os.urandom(32))
        with pytest.raises(IntegrityError):
            decrypt(impostor, encrypt(key, pattern(100)))

    def test_a_key_with_another_id_is_refused_before_reading_segments(self, key: DataKey) -> None:
        with pytest.raises(IntegrityError, match="different data key"):
            decrypt(DataKey.generate(), encrypt(key, pattern(100)))


# --- release of verified plaintext only ---------------------------------


class TestNoUnauthenticatedPlaintext:
    @pytest.fixture
    def forged(self, key: DataKey) -> tuple[bytes, bytes]:
        """A four-segment stream whose third segment has one flipped byte."""
        plaintext = pattern(3 * SEG + 100)
        ciphertext = encrypt(key, plaintext)
        return plaintext, flip(ciphertext, header_size(key) + 2 * CSEG + 5)

    @pytest.mark.parametrize("size", [1, 1000, SEG, SEG + 1, 10 * SEG])
    def test_reads_release_exactly_the_segments_before_the_forged_one(
        self, key: DataKey, forged: tuple[bytes, bytes], size: int
    ) -> None:
        plaintext, ciphertext = forged
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        assert released_before_failure(stream, size) == plaintext[: 2 * SEG]

    def test_readinto_leaves_the_rest_of_the_buffer_untouched(
        self, key: DataKey, forged: tuple[bytes, bytes]
    ) -> None:
        plaintext, ciphertext = forged
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        buffer = bytearray(b"\xa5" * (4 * SEG))
        got = stream.readinto(buffer)
        assert got == 2 * SEG
        assert buffer[:got] == plaintext[:got]
        assert buffer[got:] == b"\xa5" * (2 * SEG)
        with pytest.raises(IntegrityError):
            stream.readinto(buffer)
        assert buffer[got:] == b"\xa5" * (2 * SEG)

    def test_iteration_yields_only_verified_chunks(
        self, key: DataKey, forged: tuple[bytes, bytes]
    ) -> None:
        plaintext, ciphertext = forged
        chunks = []
        with pytest.raises(IntegrityError):
            for chunk in new_decrypting_stream(key, io.BytesIO(ciphertext), AD):
                chunks.append(chunk)
        assert b"".join(chunks) == plaintext[: 2 * SEG]

    def test_the_stream_keeps_refusing_after_a_failure(
        self, key: DataKey, forged: tuple[bytes, bytes]
    ) -> None:
        _, ciphertext = forged
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        released_before_failure(stream, SEG)
        for _ in range(2):
            with pytest.raises(IntegrityError):
                stream.read(1)

    def test_reading_everything_at_once_releases_nothing(
        self, key: DataKey, forged: tuple[bytes, bytes]
    ) -> None:
        _, ciphertext = forged
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        with pytest.raises(IntegrityError):
            stream.read()

    def test_the_decrypting_pump_leaves_only_an_authentic_prefix(
        self, key: DataKey, forged: tuple[bytes, bytes]
    ) -> None:
        plaintext, ciphertext = forged
        sink = io.BytesIO()
        with pytest.raises(IntegrityError):
            decrypt_stream(key, io.BytesIO(ciphertext), sink, AD)
        assert sink.getvalue() == plaintext[: 2 * SEG]


# --- the writer's life cycle --------------------------------------------


class FailingDestination:
    """Fault injection: a destination whose writes fail after ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.data = bytearray()
        self.limit = limit

    def write(self, data: bytes) -> int:
        if len(self.data) + len(data) > self.limit:
            raise OSError("disk full")
        self.data += data
        return len(data)


class TestEncryptingStreamLifecycle:
    def test_close_seals_but_leaves_the_destination_open(self, key: DataKey) -> None:
        sink = io.BytesIO()
        stream = new_encrypting_stream(key, sink, AD)
        stream.write(b"payload")
        stream.close()
        assert stream.closed
        assert not sink.closed
        assert decrypt(key, sink.getvalue()) == b"payload"

    def test_closing_twice_writes_the_last_segment_once(self, key: DataKey) -> None:
        sink = io.BytesIO()
        stream = new_encrypting_stream(key, sink, AD)
        stream.write(b"payload")
        stream.close()
        stream.close()
        assert len(sink.getvalue()) == ciphertext_size(7, key.key_id)

    def test_an_exception_in_the_with_body_leaves_the_stream_unsealed(self, key: DataKey) -> None:
        sink = io.BytesIO()
        with (
            pytest.raises(RuntimeError, match="upload interrupted"),
            new_encrypting_stream(key, sink, AD) as stream,
        ):
            stream.write(pattern(SEG + 10))
            raise RuntimeError("upload interrupted")
        assert stream.closed
        with pytest.raises(IntegrityError):
            decrypt(key, sink.getvalue())

    def test_abandon_leaves_the_stream_unsealed(self, key: DataKey) -> None:
        sink = io.BytesIO()
        stream = new_encrypting_stream(key, sink, AD)
        stream.write(pattern(10))
        stream.abandon()
        stream.close()
        with pytest.raises(IntegrityError):
            decrypt(key, sink.getvalue())

    def test_a_dropped_unclosed_stream_is_never_sealed(self, key: DataKey) -> None:
        sink = io.BytesIO()
        stream = new_encrypting_stream(key, sink, AD)
        stream.write(pattern(10))
        del stream
        gc.collect()
        assert len(sink.getvalue()) == header_size(key)
        with pytest.raises(IntegrityError):
            decrypt(key, sink.getvalue())

    def test_writing_after_close_is_refused(self, key: DataKey) -> None:
        stream = new_encrypting_stream(key, io.BytesIO(), AD)
        stream.close()
        with pytest.raises(ValueError):
            stream.write(b"late")

    def test_a_failed_destination_breaks_the_stream_for_good(self, key: DataKey) -> None:
        destination = FailingDestination(limit=header_size(key) + CSEG + 10)
        stream = new_encrypting_stream(key, destination, AD)
        with pytest.raises(OSError, match="disk full"):
            stream.write(pattern(3 * SEG))
        with pytest.raises(ValueError):
            stream.write(b"more")
        stream.close()
        with pytest.raises(IntegrityError):
            decrypt(key, bytes(destination.data))

    def test_bytes_bytearray_and_memoryview_are_all_accepted(self, key: DataKey) -> None:
        sink = io.BytesIO()
        with new_encrypting_stream(key, sink, AD) as stream:
            assert stream.write(b"ab") == 2
            assert stream.write(bytearray(b"cd")) == 2
            assert stream.write(memoryview(b"xxef")[2:]) == 2
        assert decrypt(key, sink.getvalue()) == b"abcdef"

    def test_a_caller_reusing_its_buffer_does_not_change_what_was_written(
        self, key: DataKey
    ) -> None:
        plaintext = pattern(2 * SEG + 3)
        buffer = bytearray(plaintext)
        sink = io.BytesIO()
        with new_encrypting_stream(key, sink, AD) as stream:
            stream.write(buffer)
            buffer[:] = bytes(len(buffer))
        assert decrypt(key, sink.getvalue()) == plaintext


class TestKeyHandles:
    def test_a_data_key_cannot_be_pickled(self, key: DataKey) -> None:
        with pytest.raises(TypeError):
            pickle.dumps(key)

    def test_streams_cannot_be_pickled(self, key: DataKey) -> None:
        writer = new_encrypting_stream(key, io.BytesIO(), AD)
        reader = new_decrypting_stream(key, io.BytesIO(encrypt(key, b"x")), AD)
        for stream in (writer, reader):
            with pytest.raises(TypeError):
                pickle.dumps(stream)

    def test_a_key_id_that_cannot_go_into_a_header_is_refused_when_encrypting(self) -> None:
        for key_id in ("k" * 129, "dék", "has space"):
            with pytest.raises(ValueError):
                new_encrypting_stream(DataKey.generate(key_id), io.BytesIO(), AD)

    def test_associated_data_must_be_bytes(self, key: DataKey) -> None:
        with pytest.raises(TypeError):
            new_encrypting_stream(key, io.BytesIO(), "obj/ab/cd")  # type: ignore[arg-type]

    def test_only_the_crypto_package_reads_key_material(self) -> None:
        root = Path(__file__).resolve().parents[1]
        private = re.compile(r"\b(_material|_from_material|_SECRET_ACCESS)\b")
        outside = [
            path.relative_to(root)
            for path in root.rglob("*.py")
            if path.relative_to(root).parts[0] not in {"crypto", "tests", ".venv"}
            and private.search(path.read_text(encoding="utf-8"))
        ]
        assert outside == []

    def test_no_call_of_the_stream_module_lets_a_caller_choose_a_salt_or_nonce(self) -> None:
        chosen = {"salt", "nonce", "nonce_prefix"}
        for name, function in inspect.getmembers(crypto.stream, inspect.isfunction):
            if function.__module__ == "crypto.stream":
                assert not chosen & set(inspect.signature(function).parameters), name


# --- the header ---------------------------------------------------------


def forged_header(*, version: int = 1, id_length: int | None = None, key_id: bytes) -> bytes:
    length = len(key_id) if id_length is None else id_length
    return b"DVES" + bytes((version, length)) + key_id + bytes(39)


class TestHeader:
    def test_the_key_id_is_learned_from_the_leading_bytes(self, key: DataKey) -> None:
        ciphertext = encrypt(key, pattern(SEG + 1))
        assert peek_key_id(ciphertext[:HEADER_MAX]) == key.key_id
        assert peek_key_id(ciphertext[: header_size(key)]) == key.key_id

    def test_read_header_consumes_exactly_the_header(self, key: DataKey) -> None:
        plaintext = pattern(1000)
        source = io.BytesIO(encrypt(key, plaintext))
        header = read_header(source)
        assert header.key_id == key.key_id
        assert header.version == 1
        assert source.tell() == header.size == header_size(key)
        assert new_decrypting_stream(key, source, AD, header=header).read() == plaintext

    def test_the_longest_key_id_fits_in_header_max(self) -> None:
        key = DataKey.generate("k" * 128)
        ciphertext = encrypt(key, b"x")
        assert header_size(key) == HEADER_MAX
        assert peek_key_id(ciphertext) == key.key_id
        assert decrypt(key, ciphertext) == b"x"

    def test_an_unknown_version_is_unsupported(self, key: DataKey) -> None:
        ciphertext = bytearray(encrypt(key, b"x"))
        ciphertext[4] = 2
        with pytest.raises(UnsupportedFormat):
            peek_key_id(bytes(ciphertext))
        with pytest.raises(UnsupportedFormat):
            decrypt(key, bytes(ciphertext))

    @pytest.mark.parametrize("id_length", [0, 129, 255])
    def test_a_key_id_length_out_of_bounds_is_refused(self, id_length: int) -> None:
        header = forged_header(id_length=id_length, key_id=b"k" * id_length)
        with pytest.raises(IntegrityError, match="key id length"):
            peek_key_id(header)
        with pytest.raises(IntegrityError, match="key id length"):
            read_header(io.BytesIO(header))

    def test_a_key_id_with_unprintable_bytes_is_refused(self) -> None:
        for key_id in (b"dek\x00x", b"dek x", b"dek\xc3\xa9"):
            with pytest.raises(IntegrityError, match="malformed"):
                peek_key_id(forged_header(key_id=key_id))

    def test_data_of_another_format_is_refused(self) -> None:
        with pytest.raises(IntegrityError, match="not a dicom-vault"):
            peek_key_id(b"DICM" + bytes(200))

    def test_a_header_cut_short_is_refused(self, key: DataKey) -> None:
        ciphertext = encrypt(key, b"x")
        for end in (0, 5, header_size(key) - 1):
            with pytest.raises(IntegrityError, match="truncated"):
                peek_key_id(ciphertext[:end])


# --- sizes and limits ---------------------------------------------------


class TestSizes:
    @pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 7 * SEG])
    def test_plaintext_size_inverts_ciphertext_size(self, key: DataKey, size: int) -> None:
        assert plaintext_size(ciphertext_size(size, key.key_id), key.key_id) == size

    @pytest.mark.parametrize("extra", [-1, 15, CSEG + 1, CSEG + 16])
    def test_sizes_no_intact_stream_has_are_refused(self, key: DataKey, extra: int) -> None:
        with pytest.raises(IntegrityError):
            plaintext_size(header_size(key) + extra, key.key_id)

    def test_negative_plaintext_size_is_refused(self, key: DataKey) -> None:
        with pytest.raises(ValueError):
            ciphertext_size(-1, key.key_id)


class TestSegmentLimit:
    """Fault injection: the segment cap lowered to 2 so that it can be reached."""

    @pytest.fixture(autouse=True)
    def two_segment_cap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(crypto._encrypting, "MAX_SEGMENTS", 2)
        monkeypatch.setattr(crypto._decrypting, "MAX_SEGMENTS", 2)

    def test_the_writer_refuses_to_pass_the_cap(self, key: DataKey) -> None:
        stream = new_encrypting_stream(key, io.BytesIO(), AD)
        stream.write(pattern(2 * SEG + 1))
        with pytest.raises(CryptoError, match="size limit"):
            stream.close()

    def test_the_reader_refuses_a_stream_past_the_cap(
        self, key: DataKey, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(crypto._encrypting, "MAX_SEGMENTS", 3)
        ciphertext = encrypt(key, pattern(2 * SEG + 1))
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), AD)
        with pytest.raises(IntegrityError, match="size limit"):
            stream.read()


# --- test vectors and the format document -------------------------------


def _vectors() -> list[dict]:
    return json.loads(VECTORS.read_text(encoding="ascii"))["vectors"]


def _rule_plaintext(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
class TestVectors:
    def test_the_vector_decrypts_to_its_plaintext(self, vector: dict) -> None:
        key = _from_material(vector["key_id"], bytes.fromhex(vector["key_hex"]))
        ciphertext = base64.b64decode(vector["ciphertext_base64"])
        ad = bytes.fromhex(vector["associated_data_hex"])
        plaintext = decrypt(key, ciphertext, ad=ad)
        assert plaintext == _rule_plaintext(vector["plaintext_size"])
        assert hashlib.sha256(plaintext).hexdigest() == vector["plaintext_sha256"]

    def test_re_encrypting_gives_the_same_bytes(self, vector: dict) -> None:
        sink = io.BytesIO()
        with fixed_encrypting_stream(
            bytes.fromhex(vector["key_hex"]),
            vector["key_id"],
            sink,
            bytes.fromhex(vector["associated_data_hex"]),
            salt=bytes.fromhex(vector["salt_hex"]),
            nonce_prefix=bytes.fromhex(vector["nonce_prefix_hex"]),
        ) as stream:
            stream.write(_rule_plaintext(vector["plaintext_size"]))
        assert hashlib.sha256(sink.getvalue()).hexdigest() == vector["ciphertext_sha256"]
        assert sink.getvalue() == base64.b64decode(vector["ciphertext_base64"])


def _decrypt_as_documented(vector: dict) -> bytes:
    """An independent reading of crypto/FORMAT.md, using only the primitives."""
    data = base64.b64decode(vector["ciphertext_base64"])
    assert data[:5] == b"DVES\x01"
    header_end = 6 + data[5] + 32 + 7
    header, body = data[:header_end], data[header_end:]
    salt, prefix = header[6 + data[5] : 38 + data[5]], header[38 + data[5] :]
    stream_key = HKDF(
        algorithm=SHA256(), length=32, salt=salt, info=b"dicom-vault stream v1 segment key"
    ).derive(bytes.fromhex(vector["key_hex"]))
    aad = header + hashlib.sha256(bytes.fromhex(vector["associated_data_hex"])).digest()
    pieces = [body[i : i + SEG + 16] for i in range(0, len(body), SEG + 16)]
    plaintext = b""
    for index, piece in enumerate(pieces):
        nonce = prefix + struct.pack(">IB", index, index == len(pieces) - 1)
        plaintext += AESGCM(stream_key).decrypt(nonce, piece, aad)
    return plaintext


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["name"])
class TestFormatDocument:
    def test_the_documented_layout_decrypts_the_vector(self, vector: dict) -> None:
        plaintext = _decrypt_as_documented(vector)
        assert plaintext == _rule_plaintext(vector["plaintext_size"])

    def test_the_vector_records_the_documented_key_and_header(self, vector: dict) -> None:
        data = base64.b64decode(vector["ciphertext_base64"])
        assert data.hex().startswith(vector["header_hex"])
        assert len(data) == vector["ciphertext_size"]
        assert peek_key_id(data) == vector["key_id"]
