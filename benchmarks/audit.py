"""Benchmark: what the access log costs.

1. The ingest rate of a synthetic CT study (500 slices of 512x512, 263 MB;
   100 slices with ``--quick``) through :class:`IngestPipeline` into the
   embedded deployment (SQLite catalog, filesystem store, local key file),
   with the access log on and with it off. "Off" exists only here: the
   benchmark swaps a :class:`NullAuditLog` into the :class:`Vault` it builds;
   no setting lets a deployment turn the log off. Rounds pair an "off" run
   with an "on" run (their order swapped every round), each into a fresh
   vault; the cost is the median over the rounds (8; 6 with ``--quick``) of
   each pair's rate difference, shown with its lowest and highest round, since
   single runs on a shared 2-core machine differ by about 10 %. Target: the
   log costs under 5 % of the rate. The CPU time spent inside the log's own
   code (``AuditLog.append``, timed in the "on" runs) is shown too: a steady
   lower bound of the cost, beside the commit's extra pages it does not see.
2. ``verify_audit`` time per million records: a log of 1 million records
   (100,000 with ``--quick``) is bulk-inserted with its hash chain computed
   here, pinned by a signed checkpoint, then verified. Target: under 10 s
   per million.

Run from the repository root::

    .venv/bin/python -m benchmarks.audit [--quick] [--json PATH]
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from benchmarks._common import Figure, parse_args, report
from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import encode, make_ct_series
from vault.admin import create_case, get_or_create_organisation
from vault.audit import GENESIS, HASHED_FIELDS, AuditLog, AuditRecord
from vault.audit_retention import verify_audit, write_checkpoint
from vault.audit_verify import digest
from vault.catalog.models import AuditEvent
from vault.core import Vault, open_vault
from vault.settings import Settings


class NullAuditLog(AuditLog):
    """An access log that records nothing: the "log off" side of this benchmark only."""

    def record(self, record: AuditRecord, *, session: Any = None) -> None:
        return None

    def append(self, *args: Any, **kwargs: Any) -> None:
        return None


def _open(root: Path) -> Vault:
    return open_vault(Settings(data_dir=root / "data"))


def _origin(vault: Vault) -> IngestOrigin:
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Bench Hospital")
        case = create_case(session, "BENCH-1", organisation)
        return IngestOrigin("cli", "cli", organisation.id, case.id)


def _check_logged(vault: Vault, expected: int) -> None:
    """Stop if the run did not log what it claims to (every instance, or nothing)."""
    with vault.catalog.read_session() as session:
        stored = session.scalar(select(func.count()).where(AuditEvent.action == "instance.store"))
    if stored != expected:
        raise RuntimeError(f"expected {expected} instance.store records, found {stored}")


class TimedAuditLog(AuditLog):
    """The real access log, counting the CPU time spent appending (the "log on" side)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu = 0.0

    def append(self, *args: Any, **kwargs: Any) -> None:
        started = time.process_time()
        try:
            super().append(*args, **kwargs)
        finally:
            self.cpu += time.process_time() - started


@dataclasses.dataclass(frozen=True)
class IngestRun:
    wall: float  # seconds ingesting the series
    cpu: float  # CPU seconds of this process meanwhile
    log_cpu: float  # of which inside AuditLog.append (0 with the log off)


def ingest_run(files: list[bytes], *, log_on: bool) -> IngestRun:
    """Ingest ``files`` into a fresh embedded vault, the access log on or off."""
    root = Path(tempfile.mkdtemp(prefix="dv-bench-audit-"))
    try:
        vault = _open(root)
        log = (TimedAuditLog if log_on else NullAuditLog)(vault.catalog, vault.clock)
        vault = dataclasses.replace(vault, audit=log)
        origin = _origin(vault)
        pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
        wall, cpu = time.perf_counter(), time.process_time()
        for data in files:
            pipeline.ingest(io.BytesIO(data), origin)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        _check_logged(vault, len(files) if log_on else 0)
        vault.close()
        return IngestRun(wall, cpu, log.cpu if isinstance(log, TimedAuditLog) else 0.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _paired_rounds(files: list[bytes], rounds: int) -> list[tuple[IngestRun, IngestRun]]:
    """(off, on) pairs, the order swapped every round so that drift in the machine's
    speed falls on both sides alike."""
    pairs = []
    for number in range(rounds):
        order = (False, True) if number % 2 == 0 else (True, False)
        runs = {log_on: ingest_run(files, log_on=log_on) for log_on in order}
        pairs.append((runs[False], runs[True]))
    return pairs


def ingest_figures(slices: int, rounds: int) -> list[Figure]:
    """The log's cost on the ingest rate, as the median over paired rounds (one round
    is too noisy on a shared 2-core machine: single runs vary by about 10 %), its
    spread, and the CPU time spent inside the log's own code (a steady lower bound)."""
    files = [encode(ds) for ds in make_ct_series(slices, seed=11)]
    pairs = _paired_rounds(files, rounds)
    costs = sorted(100.0 * (1.0 - off.wall / on.wall) for off, on in pairs)
    cpu_costs = sorted(100.0 * (on.cpu / off.cpu - 1.0) for off, on in pairs)
    best_off = min(off.wall for off, _ in pairs)
    best_on = min(on.wall for _, on in pairs)
    log_cpu = statistics.median(on.log_cpu for _, on in pairs)
    on_cpu = statistics.median(on.cpu for _, on in pairs)
    return [
        Figure(f"ingest {slices} slices, access log off (best)", slices / best_off, "inst/s"),
        Figure(f"ingest {slices} slices, access log on (best)", slices / best_on, "inst/s"),
        Figure(
            f"access-log cost on the ingest rate, median of {rounds} paired rounds",
            statistics.median(costs),
            "%",
            5.0,
            higher_is_better=False,
        ),
        Figure("access-log cost on the ingest rate, lowest round", costs[0], "%", None, False),
        Figure("access-log cost on the ingest rate, highest round", costs[-1], "%", None, False),
        Figure(
            "access-log cost on ingest CPU, median", statistics.median(cpu_costs), "%", None, False
        ),
        Figure(
            "CPU inside the access log per instance", 1000.0 * log_cpu / slices, "ms", None, False
        ),
        Figure(
            "CPU inside the access log / ingest CPU", 100.0 * log_cpu / on_cpu, "%", None, False
        ),
    ]


# --- verify ---------------------------------------------------------------

_NAMES = (*HASHED_FIELDS, "prev_hash")
_DETAIL = [
    json.dumps({"bytes": 526_000 + i, "channel": "cstore"}, sort_keys=True) for i in range(7)
]


def chained_rows(count: int, start: datetime) -> Iterator[dict[str, Any]]:
    """``count`` plausible records, each chained to the one before it.

    Hashes come from :func:`vault.audit_verify.digest` (which verify checks
    against :func:`vault.audit.chain_hash`); a log they got wrong would not
    verify, and the benchmark would stop.
    """
    prev = GENESIS
    for seq in range(1, count + 1):
        values = (
            seq,
            start + timedelta(milliseconds=seq),
            f"user:{seq % 50:032x}",
            "instance.store" if seq % 3 else "instance.read",
            "instance",
            f"{seq:032x}",
            "success",
            "10.0.0.1",
            _DETAIL[seq % 7],
            prev,
        )
        prev = digest(values)
        yield {**dict(zip(_NAMES, values, strict=True)), "hash": prev}


def bulk_insert(vault: Vault, count: int, batch: int = 20_000) -> None:
    start = vault.clock.now() - timedelta(days=1)
    statement = insert(AuditEvent.__table__)  # type: ignore[arg-type]
    rows = chained_rows(count, start)
    with vault.catalog.engine.begin() as connection:
        while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
            connection.execute(statement, chunk)


def verify_figures(count: int) -> list[Figure]:
    root = Path(tempfile.mkdtemp(prefix="dv-bench-verify-"))
    try:
        vault = _open(root)
        started = time.perf_counter()
        bulk_insert(vault, count)
        inserted = time.perf_counter() - started
        write_checkpoint(vault)
        started, cpu = time.perf_counter(), time.process_time()
        breaks = verify_audit(vault)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        vault.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if breaks:
        raise RuntimeError(f"the generated log does not verify: {breaks[:3]}")
    per_million = elapsed * 1_000_000 / (count + 1)
    return [
        Figure(f"bulk insert {count:,} chained records", count / inserted, "records/s"),
        Figure(f"audit verify, {count + 1:,} records", elapsed, "s", higher_is_better=False),
        Figure("audit verify per million records", per_million, "s", 10.0, False),
        Figure("audit verify CPU per million records", cpu * 1e6 / (count + 1), "s", None, False),
    ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    slices, rounds, records = (100, 6, 100_000) if args.quick else (500, 8, 1_000_000)
    figures = ingest_figures(slices, rounds) + verify_figures(records)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report(figures, args, title=f"dicom-vault access-log benchmark ({stamp})")


if __name__ == "__main__":
    main()
