"""Benchmark: the encrypted stream format against raw AES-GCM, and storing memory.

From one run, on one core and the same bytes:

- the format's encryption and decryption throughput (``crypto.stream``), the
  plaintext written in 1 MiB chunks to a null sink, and read back with
  ``readinto`` into a 1 MiB buffer;
- ``cryptography``'s raw ``AESGCM.encrypt_into``/``decrypt_into`` over the
  same buffer in segment-sized calls (the same OpenSSL the format runs on);
- OpenSSL's own figures, ``openssl speed -evp aes-256-gcm`` and ``-evp
  sha256`` at 16 KiB blocks (the system OpenSSL command), and ``hashlib``'s
  SHA-256 over the same buffer;
- the ratio of the format's encryption to each raw AES-GCM figure (target 0.70);
- the peak RSS of a child process storing a 100 MiB and a 1 GiB stream
  through encryption into the filesystem object store (targets: under 150 MB,
  and the 1 GiB run within 10 % of the 100 MiB run).

Run from the repository root::

    .venv/bin/python -m benchmarks.crypto_store [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks._common import (
    Figure,
    child_peak_rss,
    interleaved_best_rates,
    parse_args,
    python_child,
    report,
)

MiB = 1024 * 1024
CHUNK = MiB
GB = 1e9
MB = 1e6


class NullSink:
    """A destination that takes every byte and keeps none."""

    def write(self, data: bytes | bytearray | memoryview) -> int:
        return len(data)


# --- throughput -----------------------------------------------------------
# Each factory returns a run: a callable doing one pass over the buffer and
# returning the bytes it processed, for interleaved_best_rates.

Run = Callable[[], int]


def format_encrypt_run(buffer: memoryview) -> Run:
    from crypto import DataKey, new_encrypting_stream

    key = DataKey.generate()

    def run() -> int:
        with new_encrypting_stream(key, NullSink(), b"obj/bench") as stream:
            for start in range(0, len(buffer), CHUNK):
                stream.write(buffer[start : start + CHUNK])
        return len(buffer)

    return run


def format_decrypt_run(buffer: memoryview) -> Run:
    from crypto import DataKey, encrypt_stream, new_decrypting_stream

    key = DataKey.generate()
    encrypted = io.BytesIO()
    encrypt_stream(key, io.BytesIO(buffer), encrypted, b"obj/bench")
    ciphertext = encrypted.getvalue()  # bytes: BytesIO shares them, no copy per pass
    out = bytearray(CHUNK)

    def run() -> int:
        stream = new_decrypting_stream(key, io.BytesIO(ciphertext), b"obj/bench")
        while stream.readinto(out):
            pass
        return len(buffer)

    return run


def raw_aesgcm_runs(buffer: memoryview, call_bytes: int) -> tuple[Run, Run]:
    """Raw AES-256-GCM encrypt and decrypt passes over ``buffer`` in calls of ``call_bytes``."""
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    nonce, aad = os.urandom(12), os.urandom(113)  # one nonce: a benchmark, not a format
    starts = range(0, len(buffer) - call_bytes + 1, call_bytes)
    sealed_size = call_bytes + 16
    sealed = memoryview(bytearray(sealed_size * len(starts)))
    for number, start in enumerate(starts):
        piece = sealed[number * sealed_size : (number + 1) * sealed_size]
        aead.encrypt_into(nonce, buffer[start : start + call_bytes], aad, piece)
    out_enc = bytearray(sealed_size)
    out_dec = bytearray(call_bytes)

    def encrypt() -> int:
        for start in starts:
            aead.encrypt_into(nonce, buffer[start : start + call_bytes], aad, out_enc)
        return len(starts) * call_bytes

    def decrypt() -> int:
        for start in range(0, len(sealed), sealed_size):
            aead.decrypt_into(nonce, sealed[start : start + sealed_size], aad, out_dec)
        return len(starts) * call_bytes

    return encrypt, decrypt


def sha256_run(buffer: memoryview) -> Run:
    def run() -> int:
        hashlib.sha256(buffer).digest()
        return len(buffer)

    return run


def openssl_speed(algorithm: str, seconds: int) -> float:
    """Bytes/s that ``openssl speed -elapsed -evp ALGORITHM -bytes 16384`` reports."""
    command = ["openssl", "speed", "-elapsed", "-evp", algorithm, "-bytes", "16384"]
    result = subprocess.run(
        [*command, "-seconds", str(seconds)], capture_output=True, text=True, check=True
    )
    for line in result.stdout.splitlines():
        if line.lower().startswith(algorithm.lower()):
            return float(re.sub(r"k$", "", line.split()[-1])) * 1000
    raise RuntimeError(f"no {algorithm} figure in openssl speed output")


def throughput_figures(quick: bool) -> list[Figure]:
    from crypto._segment import SEGMENT_BYTES

    buffer = memoryview(random.Random(1).randbytes((32 if quick else 64) * MiB))
    raw_encrypt, raw_decrypt = raw_aesgcm_runs(buffer, SEGMENT_BYTES)
    raw16_encrypt, _ = raw_aesgcm_runs(buffer, 16 * 1024)
    runs = {
        "format_encrypt": format_encrypt_run(buffer),
        "format_decrypt": format_decrypt_run(buffer),
        "raw_encrypt": raw_encrypt,
        "raw_decrypt": raw_decrypt,
        "raw16_encrypt": raw16_encrypt,
        "sha256": sha256_run(buffer),
    }
    best = interleaved_best_rates(runs, rounds=10 if quick else 40)
    seconds = 1 if quick else 3
    cli_gcm = openssl_speed("aes-256-gcm", seconds)
    cli_sha = openssl_speed("sha256", seconds)
    encrypt, decrypt = best["format_encrypt"], best["format_decrypt"]
    return [
        Figure("format_encrypt", encrypt / GB, "GB/s"),
        Figure("format_decrypt", decrypt / GB, "GB/s"),
        Figure("cryptography_aesgcm_encrypt_256KiB", best["raw_encrypt"] / GB, "GB/s"),
        Figure("cryptography_aesgcm_decrypt_256KiB", best["raw_decrypt"] / GB, "GB/s"),
        Figure("cryptography_aesgcm_encrypt_16KiB", best["raw16_encrypt"] / GB, "GB/s"),
        Figure("openssl_speed_aes_256_gcm_16KiB", cli_gcm / GB, "GB/s"),
        Figure("openssl_speed_sha256_16KiB", cli_sha / GB, "GB/s"),
        Figure("hashlib_sha256", best["sha256"] / GB, "GB/s"),
        Figure(
            "ratio_format_encrypt_to_cryptography_aesgcm", encrypt / best["raw_encrypt"], "x", 0.70
        ),
        Figure("ratio_format_encrypt_to_openssl_speed", encrypt / cli_gcm, "x", 0.70),
        Figure("ratio_format_decrypt_to_cryptography_aesgcm", decrypt / best["raw_decrypt"], "x"),
    ]


# --- peak RSS of storing, in a child process ----------------------------


def deterministic_chunks(total: int) -> Iterator[bytes]:
    """``total`` bytes of deterministic data in 1 MiB chunks."""
    block = bytearray(random.Random(2).randbytes(CHUNK))
    for index, start in enumerate(range(0, total, CHUNK)):
        struct.pack_into(">Q", block, 0, index)
        yield bytes(block[: min(CHUNK, total - start)])


def store_one_stream(total: int, root: Path) -> dict[str, float]:
    """Child side: encrypt ``total`` bytes into a new filesystem-store object."""
    from crypto import DataKey, ciphertext_size, new_encrypting_stream
    from vault.store.filesystem import FilesystemObjectStore

    store = FilesystemObjectStore(root)
    key = DataKey.generate()
    started = time.perf_counter()
    if total:
        writer = store.open_writer()
        with writer, new_encrypting_stream(key, writer, writer.key.encode()) as stream:
            for chunk in deterministic_chunks(total):
                stream.write(chunk)
        object_key = writer.key
        if store.size(object_key) != ciphertext_size(total, key.key_id):
            raise RuntimeError("stored object has the wrong size")
        store.delete(object_key)
    return {"seconds": time.perf_counter() - started}


def store_figures() -> list[Figure]:
    sizes = {"baseline": 0, "100MiB": 100 * MiB, "1GiB": 1024 * MiB}
    peaks: dict[str, float] = {}
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as root:
        for label, total in sizes.items():
            child = python_child(
                "benchmarks.crypto_store", "--child-store", str(total), "--root", root
            )
            result = child_peak_rss(child, cwd=Path.cwd())
            peaks[label] = result.peak_rss_bytes / MB
            seconds = json.loads(result.stdout)["seconds"]
            if total:
                figures.append(Figure(f"store_{label}_rate", total / seconds / MB, "MB/s"))
    growth = peaks["1GiB"] / peaks["100MiB"]
    figures[:0] = [
        Figure("store_peak_rss_imports_only", peaks["baseline"], "MB", None, False),
        Figure("store_100MiB_peak_rss", peaks["100MiB"], "MB", 150, False),
        Figure("store_1GiB_peak_rss", peaks["1GiB"], "MB", 150, False),
        Figure("store_peak_rss_1GiB_over_100MiB", growth, "x", 1.10, False),
    ]
    return figures


def _extra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--child-store", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv, extra=_extra_arguments)
    if args.child_store is not None:
        print(json.dumps(store_one_stream(args.child_store, args.root)))
        return
    figures = throughput_figures(args.quick) + store_figures()
    mode = "quick" if args.quick else "full"
    python = sys.version.split()[0]
    report(figures, args, title=f"crypto_store ({mode} run, one core, python {python})")


if __name__ == "__main__":
    main()
