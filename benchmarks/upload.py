"""Benchmark: uploading a CT series over HTTP to the vault's upload API and to Orthanc.

The same synthetic CT series (512x512 int16 slices; 500 slices, about
263 MB; ``--quick`` 100) is sent from one client, in one run, to:

- the vault's upload API (``dicom-vault serve`` as a child process on a
  fresh embedded deployment: SQLite catalog, filesystem store, local key
  file, envelope encryption on), one tus creation-with-upload POST per file
  (the browser page's path for a slice);
- Debian's Orthanc REST API, ``POST /instances`` per file (fresh storage).

Both with the same client: httpx with keep-alive, at each of the
``--concurrency`` levels (default ``1,4``: one file after the other, as in
the reference figures of MISSION.md, then four at once, as the upload page
sends them), each connection a thread of its own. A small warm-up file goes
to each server first. Figures: MB/s of each (MB = 10^6 bytes of DICOM
files), vault/Orthanc (target 2.0), and the vault server's peak RSS
(``VmHWM`` of every server process, summed) for that series and, in the
full run only, for a 2 GB series (4000 slices, made on the fly by the
client, at the first concurrency): target, the 2 GB peak within 10 % of the
250 MB peak.

Beside them, two figures put the target in proportion: Orthanc's time per
file halved (what 2x Orthanc leaves for everything, one connection), and
the durable-write floor of this disk (:func:`benchmarks._common.durable_write_ms`:
the object's write and syncs and one catalog commit, nothing else). Last,
the least any design that encrypts and syncs each file before answering
would pay: one ``fdatasync`` of bytes written into preallocated space
(:func:`benchmarks._common.data_sync_ms`), and that plus AES-256-GCM and
SHA-256 of the file (:func:`benchmarks._common.seal_and_hash_ms`); and the
vault's own ingest pipeline on the same files in-process, with no HTTP around
it (:func:`benchmarks._common.pipeline_ms`), wall and CPU per file.

Run from the repository root::

    .venv/bin/python -m benchmarks.upload [--quick] [--json PATH] [--concurrency 1,4]
        [--workers N] [--large-slices N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchmarks._common import (
    Figure,
    data_sync_ms,
    durable_write_ms,
    parse_args,
    pipeline_ms,
    report,
    seal_and_hash_ms,
)
from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.dicom_peers import free_port, start_orthanc, stop_process
from tests.services.vault_server import clinician_session, wait_until_healthy

CLI = Path(sys.executable).with_name("dicom-vault")
MB = 1_000_000
READY_SECONDS = 120.0
Source = Callable[[], Iterable[bytes]]


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=[1, 4],
        help="comma-separated connection counts, both servers (default 1,4)",
    )
    parser.add_argument("--workers", type=int, default=1, help="vault API worker processes")
    parser.add_argument("--slices", type=int, default=None, help="slices of the main series")
    parser.add_argument(
        "--large-slices", type=int, default=4000, help="slices of the 2 GB series (full run)"
    )


def _levels(text: str) -> list[int]:
    levels = [int(part) for part in text.split(",") if part.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("connection counts are positive integers")
    return levels


def series(slices: int, seed: int) -> Iterator[bytes]:
    """The encoded slices of one synthetic CT series, made one at a time."""
    for dataset in make_ct_series(slices, seed=seed):
        yield encode(dataset)


Post = Callable[[httpx.Client, bytes], None]


def send_all(files: Iterable[bytes], concurrency: int, post: Post, base: str) -> tuple[int, float]:
    """POST every file over ``concurrency`` keep-alive connections; (bytes, seconds)."""
    lock = threading.Lock()
    iterator = iter(files)
    sent = 0

    def worker() -> None:
        nonlocal sent
        with httpx.Client(base_url=base, timeout=120.0) as client:
            while True:
                with lock:
                    data = next(iterator, None)
                if data is None:
                    return
                post(client, data)
                with lock:
                    sent += len(data)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return sent, time.perf_counter() - started


# --- the vault ------------------------------------------------------------------


@dataclass
class VaultServer:
    base: str
    process: subprocess.Popen[bytes]
    headers: dict[str, str]
    files_url: str

    def post(self, client: httpx.Client, data: bytes) -> None:
        headers = self.headers | {
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream",
        }
        response = client.post(self.files_url, headers=headers, content=data)
        if response.status_code != 201 or response.headers.get("x-vault-outcome") != "stored":
            raise RuntimeError(f"the vault refused a file: {response.status_code} {response.text}")

    def peak_rss(self) -> int:
        """Peak resident memory (VmHWM) of the server and its worker processes, summed."""
        processes = [psutil.Process(self.process.pid)]
        processes += processes[0].children(recursive=True)
        return sum(_vm_hwm(process.pid) for process in processes)


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _vault_env(root: Path, port: int, workers: int) -> dict[str, str]:
    env = {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(root),
        "DICOM_VAULT_AUTH__COOKIE_SECURE": "false",
        "DICOM_VAULT_API__PORT": str(port),
    }
    if workers > 1:
        env["DICOM_VAULT_API__WORKERS"] = str(workers)
    return env


@contextmanager
def vault_server(root: Path, workers: int) -> Iterator[VaultServer]:
    from vault.auth.sessions import csrf_token

    port = free_port()
    env = _vault_env(root, port, workers)
    name, cookie, case_id = clinician_session(root, "Benchmark Hospital", "BENCH-0001")
    argv = [str(CLI), "serve", "--no-scp"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base, process, READY_SECONDS)
        headers = {"Cookie": f"{name}={cookie}", "X-CSRF-Token": csrf_token(cookie)}
        response = httpx.post(f"{base}/api/uploads", json={"case_id": case_id}, headers=headers)
        response.raise_for_status()
        yield VaultServer(base, process, headers, response.json()["files_url"])
    finally:
        stop_process(process)


def measure_vault(
    root: Path, files: Source, args: argparse.Namespace, concurrency: int
) -> tuple[float, int]:
    """(MB/s, peak RSS bytes) of the vault taking ``files`` over ``concurrency`` connections."""
    with vault_server(root, args.workers) as server:
        send_all(series(2, seed=99), 1, server.post, server.base)  # warm-up
        sent, seconds = send_all(files(), concurrency, server.post, server.base)
        return sent / seconds / MB, server.peak_rss()


# --- Orthanc ----------------------------------------------------------------------


def _orthanc_post(client: httpx.Client, data: bytes) -> None:
    response = client.post(
        "/instances", content=data, headers={"Content-Type": "application/dicom"}
    )
    if response.status_code != 200:
        raise RuntimeError(f"Orthanc refused a file: {response.status_code}")


def measure_orthanc(root: Path, files: Source, concurrency: int) -> float:
    server, process = start_orthanc(root)
    try:
        send_all(series(2, seed=99), 1, _orthanc_post, server.url)  # warm-up
        sent, seconds = send_all(files(), concurrency, _orthanc_post, server.url)
        return sent / seconds / MB
    finally:
        stop_process(process)


# --- the run ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__ or "", argv, extra=_extra)
    slices = args.slices or (100 if args.quick else 500)
    print(f"making {slices} slices of 512x512...", flush=True)
    study = list(series(slices, seed=1))
    size = sum(map(len, study)) / MB
    print(f"series: {slices} files, {size:.0f} MB", flush=True)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as scratch:
        root = Path(scratch)
        base_rss = 0
        for level in args.concurrency:
            level_figures, rss, orthanc_rate = _compare(root / f"c{level}", study, level, args)
            figures += level_figures
            base_rss = base_rss or rss
            if level == 1:
                mean_file_mb = size / len(study)
                half = 1000 * mean_file_mb / orthanc_rate / 2
                figures.append(
                    Figure(
                        "Orthanc time per file / 2, 1 connection",
                        half,
                        "ms",
                        higher_is_better=False,
                    )
                )
        floor = durable_write_ms(root / "floor", len(study[0]))
        figures.append(
            Figure("durable-write floor per file, this disk", floor, "ms", higher_is_better=False)
        )
        figures += _least_any_design(root / "sync", len(study[0]))
        figures += _pipeline_alone(root / "pipeline", study)
        if not args.quick:
            figures += _large_run(root / "vault-large", args, base_rss)
    report(figures, args, title=f"upload, {slices} slices ({size:.0f} MB)")
    return 0


def _least_any_design(directory: Path, size: int) -> list[Figure]:
    """The cheapest durable write of this disk, and it plus encrypting and
    hashing the file: the least any encrypting, syncing design pays per file
    (compare with Orthanc's time per file / 2)."""
    sync = data_sync_ms(directory, size)
    sealed = sync + seal_and_hash_ms(size)
    return [
        Figure(
            "one fdatasync per file (cheapest durable write), this disk",
            sync,
            "ms",
            higher_is_better=False,
        ),
        Figure(
            "one fdatasync + AES-GCM and SHA-256 of the file", sealed, "ms", higher_is_better=False
        ),
    ]


def _pipeline_alone(directory: Path, study: list[bytes]) -> list[Figure]:
    """The vault's ingest pipeline on the same files, in-process, with no HTTP around it:
    what any way of carrying the files to this pipeline would start from."""
    wall, cpu = pipeline_ms(directory, study)
    return [
        Figure("vault ingest pipeline alone (no HTTP), per file", wall, "ms", None, False),
        Figure("vault ingest pipeline alone, CPU per file", cpu, "ms", None, False),
    ]


def _compare(
    root: Path, study: list[bytes], level: int, args: argparse.Namespace
) -> tuple[list[Figure], int, float]:
    """The vault and Orthanc at ``level`` connections: (figures, vault RSS, Orthanc MB/s)."""
    suffix = f"{level} connection{'s' if level > 1 else ''}"
    vault_rate, vault_rss = measure_vault(root / "vault", lambda: study, args, level)
    print(f"vault    {vault_rate:7.1f} MB/s, {suffix}, peak RSS {vault_rss / 2**20:.1f} MiB")
    orthanc_rate = measure_orthanc(root / "orthanc", lambda: study, level)
    print(f"orthanc  {orthanc_rate:7.1f} MB/s, {suffix}", flush=True)
    size = sum(map(len, study)) / MB
    figures = [
        Figure(f"vault upload API, {suffix}", vault_rate, "MB/s"),
        Figure(f"Orthanc POST /instances, {suffix}", orthanc_rate, "MB/s"),
        Figure(f"vault / Orthanc, {suffix}", vault_rate / orthanc_rate, "x", target=2.0),
        Figure(
            f"vault peak RSS, {size:.0f} MB series, {suffix}",
            vault_rss / 2**20,
            "MiB",
            higher_is_better=False,
        ),
    ]
    return figures, vault_rss, orthanc_rate


def _large_run(root: Path, args: argparse.Namespace, base_rss: int) -> list[Figure]:
    large = args.large_slices
    print(f"vault, {large} slices made on the fly...", flush=True)
    rate, rss = measure_vault(root, lambda: series(large, seed=2), args, args.concurrency[0])
    size = large * 525_000 / MB
    print(f"vault    {rate:7.1f} MB/s, peak RSS {rss / 2**20:.1f} MiB", flush=True)
    return [
        Figure(f"vault upload API, {size:.0f} MB series", rate, "MB/s"),
        Figure(f"vault peak RSS, {size:.0f} MB series", rss / 2**20, "MiB", higher_is_better=False),
        Figure("peak RSS, large / main series", rss / base_rss, "x", 1.10, False),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
