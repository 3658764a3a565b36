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
each measurement, so no run sees duplicates. Figures: instances/s of each,
vault/Orthanc (target 2.0) and vault/storescp (target 0.5 with 4
associations).

Run from the repository root::

    .venv/bin/python -m benchmarks.cstore [--quick] [--json PATH] [--processes N]
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

from benchmarks._common import Figure, parse_args, report
from dicom_ingest.synthetic import make_ct_series, write_series
from tests.services.dicom_peers import free_port, nodelay_env, start_orthanc, stop_process

DCMTK = Path("/usr/bin")
CLI = Path(sys.executable).with_name("dicom-vault")
SENDER_AE = "BENCHSCU"
Target = tuple[str, int, str]  # host, port, called AE title


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes", type=int, default=2, help="vault receiver processes for 4 associations"
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


@contextmanager
def vault_receiver(root: Path, processes: int) -> Iterator[Target]:
    port = free_port()
    env = {
        **nodelay_env(),
        "DICOM_VAULT_DATA_DIR": str(root),
        "DICOM_VAULT_SCP__PORT": str(port),
        "DICOM_VAULT_SCP__PROCESSES": str(processes),
    }
    subprocess.run(
        [str(CLI), "pacs", "add", SENDER_AE, "--organisation", "Benchmark Hospital"],
        env=env,
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen([str(CLI), "scp"], env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_for_echo(port, process)
        yield "127.0.0.1", port, "DICOMVAULT"
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
    with start(root / f"{name}-{associations}") as target:  # type: ignore[attr-defined]
        rate = send(target, files, associations)
    print(f"{name:9s} {associations} association(s): {rate:8.1f} instances/s", flush=True)
    return rate


def run(args: argparse.Namespace) -> list[Figure]:
    slices = 100 if args.quick else 500
    with tempfile.TemporaryDirectory(prefix="dv-bench-cstore-") as tmp:
        root = Path(tmp)
        files = write_series(root / "series", make_ct_series(slices, rows=512, columns=512))
        figures: list[Figure] = []
        for associations in (1, 4):
            processes = 1 if associations == 1 else args.processes
            rates = {
                "vault": measure(
                    "vault",
                    lambda r, p=processes: vault_receiver(r, p),
                    root,
                    files,
                    associations,
                ),
                "orthanc": measure("orthanc", orthanc_receiver, root, files, associations),
                "storescp": measure("storescp", storescp_receiver, root, files, associations),
            }
            suffix = f"{associations} assoc"
            figures += [
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
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, extra=_extra)
    slices = 100 if args.quick else 500
    title = f"C-STORE, {slices} CT slices 512x512, dcmtk storescu, {os.cpu_count()} cores"
    report(run(args), args, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
