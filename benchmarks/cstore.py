"""Benchmark: C-STORE into the vault against Orthanc and dcmtk's storescp.

The same synthetic CT series (512x512 int16; 500 slices, ``--quick`` 100) is
sent with Debian's dcmtk ``storescu`` (``TCP_NODELAY=1``) to, one after the
other in one run:

- the vault's receiver (``dicom-vault scp`` as a child process on a fresh
  embedded vault: validation, envelope encryption, catalog);
- Debian's Orthanc C-STORE receiver (``TCP_NODELAY=1`` in its environment,
  fresh storage);
- dcmtk's ``storescp`` writing to disk: the protocol ceiling.

first over one association, then over 4 concurrent associations (4 storescu
processes on quarters of the series; storescp with ``--fork``, the vault
with ``scp.processes`` = ``--processes``). Each server is started fresh for
each measurement, so no run sees duplicates; with ``--rounds`` > 1 the
receivers take turns and each keeps its best round (the machine may be
shared: alternating gives each the same chances). Figures: instances/s of
each, vault/Orthanc (target 2.0) and vault/storescp (target 0.5 with 4
associations), the CPU seconds each vault receiver process spent (several
processes should share the work), and the ceiling pynetdicom itself sets
here: a pynetdicom SCP that stores nothing (``benchmarks/_null_scp.py``),
with pynetdicom's own polling association threads and with the vault's
event-driven ones, over one association. Two more put the target in
proportion: Orthanc's time per instance halved (what 2x Orthanc leaves for
everything, one association), and the durable-write floor of this disk
(:func:`benchmarks._common.durable_write_ms`: the object's write and syncs
and one catalog commit, nothing else). Last, the cheapest durable write of
any design (:func:`benchmarks._common.data_sync_ms`: one ``fdatasync`` of
bytes written into preallocated space) and storescp's time per instance with
it added: when that exceeds Orthanc's time halved, no receiver that syncs
each instance before answering reaches 2x Orthanc over one association on
this disk, however little else it does.

Run from the repository root::

    .venv/bin/python benchmarks/cstore.py [--quick] [--json PATH] [--processes N] [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Figure, data_sync_ms, durable_write_ms, parse_args, report
from dicom_ingest.synthetic import make_ct_series, write_series
from tests.services.dicom_peers import (
    free_port,
    nodelay_env,
    receiver_processes,
    start_orthanc,
    stop_process,
    wait_until_serving,
)

DCMTK = Path("/usr/bin")
CLI = Path(sys.executable).with_name("dicom-vault")
SENDER_AE = "BENCHSCU"
Target = tuple[str, int, str]  # host, port, called AE title


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes", type=int, default=2, help="vault receiver processes for 4 associations"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="rounds per receiver (default 2, --quick 1)"
    )


def _wait_for_echo(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError("a receiver exited during start-up")
        echo = subprocess.run(
            [str(DCMTK / "echoscu"), "-aet", SENDER_AE, "127.0.0.1", str(port)],
            capture_output=True,
        )
        if echo.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("a receiver never answered C-ECHO")


class ProcessCpu:
    """CPU seconds spent by each receiver process of the vault while it is measured."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start: dict[int, float] = {}
        self._processes: list[psutil.Process] = []

    def start(self, pid: int) -> None:
        parent = psutil.Process(pid)
        receivers = [
            child
            for child in parent.children()
            if "resource_tracker" not in " ".join(child.cmdline())
        ]
        self._processes = receivers or [parent]
        self._start = {p.pid: _cpu(p) for p in self._processes}

    def stop(self) -> None:
        self.seconds = sorted((_cpu(p) - self._start[p.pid] for p in self._processes), reverse=True)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@contextmanager
def null_receiver(root: Path, reactor: str) -> Iterator[Target]:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks._null_scp", str(port), "--reactor", reactor]
    repository = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(argv, env=nodelay_env(), cwd=repository, stdout=subprocess.DEVNULL)
    try:
        _wait_for_echo(port, process)
        yield "127.0.0.1", port, "NULLSCP"
    finally:
        stop_process(process)


@contextmanager
def vault_receiver(root: Path, processes: int, cpu: ProcessCpu | None = None) -> Iterator[Target]:
    port = free_port()
    env = {
        **nodelay_env(),
        "DICOM_VAULT_DATA_DIR": str(root),
        "DICOM_VAULT_SCP__PORT": str(port),
        "DICOM_VAULT_SCP__PROCESSES": str(processes),
        "DICOM_VAULT_LOG_LEVEL": "warning",  # no association lines in the report
    }
    subprocess.run(
        [
            str(CLI),
            "pacs",
            "add",
            SENDER_AE,
            "--organisation",
            "Benchmark Hospital",
            "--new-organisation",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen([str(CLI), "scp"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        wait_until_serving(process)  # every receiver process, not only the first
        if processes > 1:
            receiver_processes(process.pid, port, processes)
        if cpu is not None:
            cpu.start(process.pid)
        yield "127.0.0.1", port, "DICOMVAULT"
        if cpu is not None:
            cpu.stop()
    finally:
        stop_process(process)


@contextmanager
def orthanc_receiver(root: Path) -> Iterator[Target]:
    server, process = start_orthanc(root)
    try:
        yield "127.0.0.1", server.dicom_port, server.aet
    finally:
        stop_process(process)


@contextmanager
def storescp_receiver(root: Path) -> Iterator[Target]:
    port = free_port()
    root.mkdir(parents=True)
    argv = [str(DCMTK / "storescp"), "--fork", "-pdu", "131072", "-od", str(root), str(port)]
    process = subprocess.Popen(argv, env=nodelay_env(), stdout=subprocess.DEVNULL)
    try:
        _wait_for_echo(port, process)
        yield "127.0.0.1", port, "STORESCP"
    finally:
        stop_process(process)


def send(target: Target, files: list[Path], associations: int) -> float:
    """Send ``files`` over ``associations`` storescu processes; return instances/s."""
    host, port, called = target
    parts = [files[n::associations] for n in range(associations)]
    argv = [str(DCMTK / "storescu"), "-aet", SENDER_AE, "-aec", called, host, str(port)]
    started = time.perf_counter()
    senders = [
        subprocess.Popen([*argv, *map(str, part)], env=nodelay_env(), stderr=subprocess.PIPE)
        for part in parts
    ]
    failures = [p for p in senders if p.wait() != 0]
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"storescu failed against {called}")
    return len(files) / elapsed


def measure(
    name: str, start: Callable[[Path], object], root: Path, files: list[Path], associations: int
) -> float:
    directory = root / f"{name}-{associations}-{time.monotonic_ns()}"
    with start(directory) as target:  # type: ignore[attr-defined]
        rate = send(target, files, associations)
    print(f"{name:10s} {associations} association(s): {rate:8.1f} instances/s", flush=True)
    return rate


Starter = Callable[[Path], object]


def best_rates(
    starters: dict[str, Starter], root: Path, files: list[Path], associations: int, rounds: int
) -> dict[str, float]:
    """Each receiver's best rate over ``rounds`` rounds, the receivers taking turns."""
    best = dict.fromkeys(starters, 0.0)
    for _ in range(rounds):
        for name, start in starters.items():
            best[name] = max(best[name], measure(name, start, root, files, associations))
    return best


def comparison(rates: dict[str, float], associations: int) -> list[Figure]:
    suffix = f"{associations} assoc"
    return [
        Figure(f"vault C-STORE, {suffix}", rates["vault"], "instances/s"),
        Figure(f"Orthanc C-STORE, {suffix}", rates["orthanc"], "instances/s"),
        Figure(f"storescp to disk, {suffix}", rates["storescp"], "instances/s"),
        Figure(f"vault / Orthanc, {suffix}", rates["vault"] / rates["orthanc"], "x", 2.0),
        Figure(
            f"vault / storescp, {suffix}",
            rates["vault"] / rates["storescp"],
            "x",
            0.5 if associations == 4 else None,
        ),
    ]


def _synced_ceiling(sync_ms: float, storescp_rate: float) -> list[Figure]:
    """The cheapest sync, and storescp's time per instance with it added: what
    even the protocol ceiling would take, one association, if it made each
    instance durable before answering (compare with Orthanc's time / 2)."""
    storescp_ms = 1000 / storescp_rate
    return [
        Figure(
            "one fdatasync per instance (cheapest durable write), this disk",
            sync_ms,
            "ms",
            higher_is_better=False,
        ),
        Figure(
            "storescp time per instance + one fdatasync, 1 assoc",
            storescp_ms + sync_ms,
            "ms",
            higher_is_better=False,
        ),
    ]


def run(args: argparse.Namespace) -> list[Figure]:
    slices = 100 if args.quick else 500
    rounds = args.rounds or (1 if args.quick else 2)
    with tempfile.TemporaryDirectory(prefix="dv-bench-cstore-") as tmp:
        root = Path(tmp)
        files = write_series(root / "series", make_ct_series(slices, rows=512, columns=512))
        figures: list[Figure] = []
        for associations in (1, 4):
            processes = 1 if associations == 1 else args.processes
            cpu = ProcessCpu()
            starters: dict[str, Starter] = {
                "vault": lambda r, p=processes, c=cpu: vault_receiver(r, p, c),
                "orthanc": orthanc_receiver,
                "storescp": storescp_receiver,
            }
            rates = best_rates(starters, root, files, associations, rounds)
            figures += comparison(rates, associations)
            figures += [
                Figure(
                    f"vault process {n + 1} CPU (last round), {associations} assoc",
                    s,
                    "s",
                    higher_is_better=False,
                )
                for n, s in enumerate(cpu.seconds)
            ]
            if associations == 1:
                half = 1000 / rates["orthanc"] / 2
                figures.append(
                    Figure(
                        "Orthanc time per instance / 2, 1 assoc", half, "ms", higher_is_better=False
                    )
                )
                storescp_one = rates["storescp"]
        size = files[0].stat().st_size
        floor = durable_write_ms(root / "floor", size)
        figures.append(
            Figure(
                "durable-write floor per instance, this disk", floor, "ms", higher_is_better=False
            )
        )
        figures += _synced_ceiling(data_sync_ms(root / "sync", size), storescp_one)
        null = {
            "null-stock": lambda r: null_receiver(r, "stock"),
            "null-vault": lambda r: null_receiver(r, "vault"),
        }
        ceiling = best_rates(null, root, files, 1, rounds)
        figures += [
            Figure(
                "pynetdicom SCP storing nothing, stock threads, 1 assoc",
                ceiling["null-stock"],
                "instances/s",
            ),
            Figure(
                "pynetdicom SCP storing nothing, vault threads, 1 assoc",
                ceiling["null-vault"],
                "instances/s",
            ),
        ]
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, extra=_extra)
    slices = 100 if args.quick else 500
    title = f"C-STORE, {slices} CT slices 512x512, dcmtk storescu, {os.cpu_count()} cores"
    report(run(args), args, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
