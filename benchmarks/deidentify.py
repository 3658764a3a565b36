"""Benchmark: the vault's de-identification engine against dicognito and deid.

From one run, pinned to one core, on the same synthetic CT series (512x512
int16 slices with PHI planted everywhere the profile covers, from
``dicom_ingest.synthetic``): each contender reads every file from disk,
de-identifies it and writes the result to disk, in alternating rounds (best
round counts). Figures:

- instances per second for the vault's engine, dicognito and deid;
- the vault's rate over dicognito's (target: at least 3) and over deid's;
- how many of the planted identifiers (``SyntheticPatient.markers()``, in
  any ASCII case) survive anywhere in each contender's output bytes
  (vault target: 0). dicognito and deid run with their defaults (deid with
  its default recipe and ``remove_private=True``).

And, through the whole pipeline (:mod:`benchmarks._deid_pipeline`): the
seconds from the study settling to its pseudonymised copy being ready, with a
real Redis broker and a ``dicom-vault worker`` process (target: 30 s for 500
slices), the rate, and planted identifiers surviving in the stored copies.

Run from the repository root (dicognito and deid come with the ``bench`` extra)::

    .venv/bin/python -m benchmarks.deidentify [--quick] [--json PATH] [--slices N]
        [--pipeline-only | --engines-only] [--redis redis://127.0.0.1:6379]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

import pydicom

from benchmarks._common import Figure, interleaved_best_rates, parse_args, report
from deidentify import Deidentifier, Profile, PseudonymKeys
from dicom_ingest.synthetic import SyntheticPatient, make_ct_series, write_series

Contender = Callable[[list[Path], Path], int]


class _BenchMacKey:
    """An in-process HMAC key for the benchmark (a random key, never stored)."""

    key_id = "bench"

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self._secret, data, hashlib.sha256).digest()


def vault_engine(files: list[Path], out: Path) -> int:
    engine = Deidentifier(Profile(), PseudonymKeys(_BenchMacKey()))
    for number, path in enumerate(files):
        outcome = engine.deidentify_bytes(path.read_bytes())
        if outcome.encoded is None:
            raise RuntimeError("the benchmark series was quarantined")
        (out / f"{number}.dcm").write_bytes(outcome.encoded)
    return len(files)


def dicognito(files: list[Path], out: Path) -> int:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    for number, path in enumerate(files):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / f"{number}.dcm")
    return len(files)


def deid(files: list[Path], out: Path) -> int:
    from deid.config import DeidRecipe
    from deid.dicom import get_identifiers, replace_identifiers
    from deid.logger import bot

    bot.level = 0
    recipe = DeidRecipe()
    for number, path in enumerate(files):
        ids = get_identifiers([str(path)])
        (ds,) = replace_identifiers(
            [str(path)], ids=ids, deid=recipe, save=False, remove_private=True
        )
        ds.save_as(out / f"{number}.dcm")
    return len(files)


CONTENDERS: dict[str, Contender] = {"vault": vault_engine, "dicognito": dicognito, "deid": deid}


def surviving_markers(out: Path) -> int:
    """How many planted identifiers appear in any output file, in any ASCII case."""
    markers = [m.lower().encode() for m in SyntheticPatient().markers()]
    found: set[bytes] = set()
    for path in out.iterdir():
        data = path.read_bytes().lower()
        found.update(m for m in markers if m in data)
    return len(found)


def pin_to_one_core() -> None:
    """Run on one core only, so every contender gets the same single CPU."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def engine_figures(args: argparse.Namespace, files: list[Path], work: Path) -> list[Figure]:
    """Rates of the three engines, their ratios, and surviving identifiers."""
    outs = {name: work / name for name in CONTENDERS}
    for out in outs.values():
        out.mkdir()
    runs = {name: _bound(fn, files, outs[name]) for name, fn in CONTENDERS.items()}
    rates = interleaved_best_rates(runs, rounds=1 if args.quick else 2)
    figures = [
        Figure(f"{name} de-identification rate", rate, "instances/s")
        for name, rate in rates.items()
    ]
    figures.append(
        Figure("vault rate / dicognito rate", rates["vault"] / rates["dicognito"], "x", 3.0)
    )
    figures.append(Figure("vault rate / deid rate", rates["vault"] / rates["deid"], "x"))
    for name, out in outs.items():
        target = 0.0 if name == "vault" else None
        count = float(surviving_markers(out))
        label = f"{name} planted identifiers surviving"
        figures.append(Figure(label, count, "markers", target, higher_is_better=False))
    return figures


def _bound(contender: Contender, files: list[Path], out: Path) -> Callable[[], int]:
    return lambda: contender(files, out)


def pipeline_figures(args: argparse.Namespace, files: list[Path], work: Path) -> list[Figure]:
    """The whole pipeline on the same series: settle -> pseudonymised copy ready."""
    from benchmarks._deid_pipeline import measure

    return measure(files, work, args.redis)


def main(argv: list[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--slices", type=int, help="series length (default 500, quick 100)")
        only = parser.add_mutually_exclusive_group()
        only.add_argument("--pipeline-only", action="store_true", help="skip the engine race")
        only.add_argument("--engines-only", action="store_true", help="skip the whole pipeline")
        parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server")

    args = parse_args(__doc__.splitlines()[0], argv, extra=extra)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    slices = args.slices or (100 if args.quick else 500)
    pin_to_one_core()
    with tempfile.TemporaryDirectory(prefix="dv-deid-bench-") as tmp:
        work = Path(tmp)
        files = write_series(work / "series", make_ct_series(slices, plant_phi=True))
        figures = [] if args.pipeline_only else engine_figures(args, files, work)
        if not args.engines_only:
            figures += pipeline_figures(args, files, work)
    report(figures, args, f"De-identification, {slices} CT slices of 512x512, one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
