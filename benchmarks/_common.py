"""What every benchmark shares: arguments, figures, the report, rates, child RSS.

A benchmark builds a list of :class:`Figure` records and hands them to
:func:`report`, which prints a table and, with ``--json PATH``, writes them as
a JSON list of ``{name, value, unit, target, higher_is_better}`` (``target``
null where there is none). ``--quick`` asks for a run of under a minute.
Peak memory is measured on a child process with :func:`child_peak_rss`, so
the parent's own allocations never count.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure and the target it is held to (``None``: no target)."""

    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True

    @property
    def meets_target(self) -> bool | None:
        """Whether the value meets its target; ``None`` without a target."""
        if self.target is None:
            return None
        if self.higher_is_better:
            return self.value >= self.target
        return self.value <= self.target


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    *,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The common arguments (``--quick``, ``--json PATH``) plus any ``extra`` ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the figures as JSON")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def _format_value(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:.3g}"


def format_table(figures: Iterable[Figure], title: str = "") -> str:
    """A plain-text table of the figures with their targets and verdicts."""
    rows = [("figure", "value", "unit", "target", "ok")]
    for figure in figures:
        target = "-"
        if figure.target is not None:
            sign = ">=" if figure.higher_is_better else "<="
            target = f"{sign} {_format_value(figure.target)}"
        verdict = {None: "", True: "yes", False: "NO"}[figure.meets_target]
        rows.append((figure.name, _format_value(figure.value), figure.unit, target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [title] if title else []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
        cells += [cell.ljust(width) for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(figures: Iterable[Figure], path: Path) -> None:
    """Write the figures as a JSON list of records."""
    records = [asdict(figure) for figure in figures]
    path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")


def report(figures: Sequence[Figure], args: argparse.Namespace, title: str = "") -> None:
    """Print the table and write the JSON file if ``--json`` was given."""
    print(format_table(figures, title))
    if args.json is not None:
        write_json(figures, args.json)
        print(f"\nfigures written to {args.json}")


def _rate(run: Callable[[], int]) -> float:
    started = time.perf_counter()
    processed = run()
    return processed / (time.perf_counter() - started)


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """The best of ``repeats`` runs of ``run`` (which returns bytes processed), in bytes/s."""
    return max(_rate(run) for _ in range(repeats))


def interleaved_best_rates(runs: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Each contender's best rate (bytes/s) over ``rounds`` rounds run in alternation.

    On a shared machine the load changes from second to second; alternating
    short runs gives every contender the same chances, so ratios between
    their best rates are fair where separate long runs would not be.
    """
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = max(best[name], _rate(run))
    return best


def durable_write_ms(directory: Path, size: int, count: int = 200) -> float:
    """Milliseconds per object of the disk work a durable store cannot skip here.

    Each object: ``size`` random bytes through the vault's own filesystem
    store writer (temporary file, fsync, rename, fsync of the directory),
    then one row inserted and committed in a SQLite database with the
    catalog's pragmas (WAL, ``synchronous=FULL``). No parsing, no
    encryption, no protocol: a floor under the time any receiver of this
    design spends per instance on this disk, measured in the same run as
    the rates it is set beside.
    """
    from vault.catalog.db import _sqlite_pragmas
    from vault.store.filesystem import FilesystemObjectStore

    directory.mkdir(parents=True, exist_ok=True)
    store = FilesystemObjectStore(directory / "objects")
    database = sqlite3.connect(directory / "floor.sqlite")
    _sqlite_pragmas(database, None)  # the catalog's own: WAL, synchronous=FULL, autocommit
    database.execute("CREATE TABLE object (key TEXT PRIMARY KEY, size INTEGER)")
    payloads = [os.urandom(size) for _ in range(4)]
    started = time.perf_counter()
    for number in range(count):
        with store.open_writer() as writer:
            writer.write(payloads[number % 4])
            key = writer.key
        database.execute("BEGIN IMMEDIATE")
        database.execute("INSERT INTO object VALUES (?, ?)", (key, size))
        database.execute("COMMIT")
    elapsed = time.perf_counter() - started
    database.close()
    return elapsed / count * 1000


def data_sync_ms(directory: Path, size: int, count: int = 200) -> float:
    """Milliseconds per object of the cheapest durable write this disk offers.

    ``size`` bytes written in place into space allocated (and synced)
    beforehand, then one ``fdatasync``: no new file, no rename, no directory
    or journal metadata, no catalog. Any receiver that syncs each object
    before it answers pays at least this, whatever its design; the
    durable-write floor (:func:`durable_write_ms`) is what the vault's
    one-file-per-object store pays.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "preallocated"
    payloads = [os.urandom(size) for _ in range(4)]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size * count)
        os.fsync(fd)
        started = time.perf_counter()
        for number in range(count):
            os.pwrite(fd, payloads[number % 4], number * size)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        path.unlink()
    return elapsed / count * 1000


def pipeline_ms(directory: Path, files: Sequence[bytes]) -> tuple[float, float]:
    """Milliseconds per file (wall, CPU) of the vault's own ingest pipeline alone.

    ``files`` go through :class:`dicom_ingest.pipeline.IngestPipeline` in this
    process, one after the other, on a fresh embedded vault (SQLite catalog,
    filesystem store, local key file): header read, validation, encryption,
    hashing, the durable write and the catalog rows, with no HTTP or DIMSE
    around them. Whatever carries files to the vault adds to this.
    """
    from tests.services.vault_env import make_case
    from vault.core import open_vault
    from vault.settings import Settings

    vault = open_vault(Settings(data_dir=directory))
    try:
        case = make_case(vault, "BENCH-PIPELINE")
        case.pipeline.ingest(io.BytesIO(files[0]), case.origin)  # warm: key, series, caches
        started, cpu = time.perf_counter(), time.process_time()
        for data in files[1:]:
            case.pipeline.ingest(io.BytesIO(data), case.origin)
        count = max(len(files) - 1, 1)
        wall, used = time.perf_counter() - started, time.process_time() - cpu
    finally:
        vault.close()
    return wall / count * 1000, used / count * 1000


def seal_and_hash_ms(size: int, count: int = 50) -> float:
    """Milliseconds to encrypt (AES-256-GCM, 64 KiB segments) and SHA-256
    ``size`` bytes with the ``cryptography`` and ``hashlib`` primitives, in
    this process: what encryption at rest adds to any design at the least."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    payload = memoryview(os.urandom(size))
    segment = 64 * 1024
    started = time.perf_counter()
    for _ in range(count):
        digest = hashlib.sha256()
        for number, offset in enumerate(range(0, size, segment)):
            chunk = payload[offset : offset + segment]
            digest.update(chunk)
            aead.encrypt(number.to_bytes(12, "big"), chunk, None)
        digest.digest()
    return (time.perf_counter() - started) / count * 1000


# Runs the command given as arguments and reports its exit code, output and
# wait4 resource usage as JSON. It exists because Linux carries a process's RSS
# high-water mark across fork and exec: a child spawned straight from a large
# benchmark process would report the parent's peak. This launcher is small, so
# the child it forks reports its own (floor: the launcher's ~10 MB).
_LAUNCHER = """
import json, os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, text=True)
with process.stdout as output:
    stdout = output.read()
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
json.dump({"returncode": process.returncode, "stdout": stdout,
           "peak_rss_bytes": usage.ru_maxrss * 1024}, sys.stdout)
"""


@dataclass(frozen=True)
class ChildResult:
    """A finished child process: its exit code, output and peak resident memory."""

    returncode: int
    stdout: str
    peak_rss_bytes: int


def child_peak_rss(
    argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> ChildResult:
    """Run ``argv`` to completion and measure that one child's peak RSS.

    The child is started by a small launcher process that reads its
    ``wait4`` resource usage (``ru_maxrss``, KiB on Linux), which covers
    exactly that child and not this (possibly large) benchmark process.

    Raises
    ------
    subprocess.CalledProcessError
        The child exited with a non-zero status.
    """
    launcher = [sys.executable, "-c", _LAUNCHER, *argv]
    finished = subprocess.run(
        launcher, cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    outcome = json.loads(finished.stdout)
    if outcome["returncode"] != 0:
        raise subprocess.CalledProcessError(outcome["returncode"], list(argv), outcome["stdout"])
    return ChildResult(outcome["returncode"], outcome["stdout"], outcome["peak_rss_bytes"])


def python_child(module: str, *args: str) -> list[str]:
    """The command running ``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
