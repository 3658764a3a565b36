"""Benchmark: downloading a pseudonymised study from the vault (ZIP, WADO-RS) and from Orthanc.

One synthetic CT series (512x512 int16; 500 slices, ``--quick`` 100) is
ingested into a fresh embedded vault and pseudonymised by the real pipeline
(Celery eager, in this process; untimed). An engineer account with an API
token is assigned the study's case. Then, one after the other in one run:

- the vault (``dicom-vault serve --no-scp``, a child process) sends the
  study as its ZIP (``/api/engineer/studies/{id}/archive``: every member
  decrypted, verified and streamed) and through WADO-RS
  (``/dicomweb/studies/{uid}``, multipart/related);
- Debian's Orthanc, holding the same pseudonymised instances (uploaded with
  ``POST /instances``, untimed), sends ``GET /studies/{id}/archive``.

Each download is streamed by an httpx client that counts and discards the
bytes. Rates are study data per second (the DICOM bytes delivered, so
Orthanc's deflated ZIP is not penalised for being smaller); Orthanc's ZIP
rate is printed too. Best of ``--rounds`` alternating rounds. The vault's
peak RSS is the server process's ``VmHWM`` while it serves the downloads: the
high-water mark is reset after one warm-up request (see :func:`_warm_up`) and
read before the server is stopped; the peak up to then is printed too. The
full run repeats the vault side on a larger study (``--large``, 1500 slices)
in a fresh server, to show that the peak RSS does not grow with the study.
Targets: vault ZIP at least 1.5x Orthanc's rate; the larger study's peak RSS
within 10 % of the smaller one's.

Run from the repository root::

    .venv/bin/python -m benchmarks.download [--quick] [--json PATH] [--slices N] [--large N]
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
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from benchmarks._common import Figure, interleaved_best_rates, parse_args, report
from benchmarks._deid_pipeline import ingest_series
from deidentify.tasks import create_celery_app, register_deidentification
from dicom_ingest.synthetic import make_ct_series, write_series
from tests.services.dicom_peers import free_port, start_orthanc, stop_process
from vault.admin import assign_case, create_user, get_or_create_organisation
from vault.auth.login import Authenticator
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Case
from vault.core import open_vault
from vault.objects import StoredObject, open_decrypted
from vault.settings import Settings
from vault.settle import StudySettledHooks, settle_study

CLI = Path(sys.executable).with_name("dicom-vault")
MB = 1_000_000
WAIT_SECONDS = 120  # gives up on a server that does not start


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--slices", type=int, help="slices of the compared study")
    parser.add_argument("--large", type=int, default=1500, help="slices of the larger study")
    parser.add_argument("--rounds", type=int, help="alternating download rounds (best counts)")


@dataclass(frozen=True)
class Study:
    """A pseudonymised study ready to download, and how to reach it."""

    data_dir: Path
    pseudo_study_id: str
    study_uid: str
    token: str
    study_bytes: int
    instances: list[bytes] | None  # the pseudonymised files, kept only for Orthanc


def _engineer_token(data_dir: Path) -> str:
    """An engineer assigned to the (only) case, and an API token of theirs."""
    vault = open_vault(Settings(data_dir=data_dir))
    try:
        with vault.catalog.session() as session:
            maker = get_or_create_organisation(session, "Benchmark Maker", kind="manufacturer")
            user = create_user(session, "bench-engineer@maker.example", "engineer", maker)
            assign_case(session, session.scalars(select(Case)).one(), user)
            _, secret = Authenticator(vault).tokens.issue(session, user, name="bench", days=1)
            return secret
    finally:
        vault.close()


def prepare(root: Path, slices: int, *, keep_files: bool) -> Study:
    """Ingest and pseudonymise a ``slices``-slice CT series in a fresh vault under ``root``."""
    files = write_series(root / "series", make_ct_series(slices, rows=512, columns=512))
    data_dir = root / "vault"
    vault = open_vault(Settings(data_dir=data_dir))
    try:
        study_id = ingest_series(vault, files)
        hooks = StudySettledHooks()
        register_deidentification(hooks, create_celery_app(vault.settings, vault=vault))
        settle_study(vault, study_id, hooks)
        with vault.catalog.session() as session:
            study = session.scalars(
                select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
            ).one()
            rows = list(session.scalars(select(PseudonymisedInstance).where(
                PseudonymisedInstance.pseudo_study_id == study.id,
                PseudonymisedInstance.state == "done",
            )))  # fmt: skip
            pseudo_id, uid = study.id, str(study.pseudo_study_uid)
        if study.state != "done" or len(rows) != slices:
            raise RuntimeError("the pseudonymised copy is not complete")
        instances = [_plaintext(vault, row) for row in rows] if keep_files else None
    finally:
        vault.close()
    for path in files:
        path.unlink()
    size = sum(row.size or 0 for row in rows)
    return Study(data_dir, pseudo_id, uid, _engineer_token(data_dir), size, instances)


def _plaintext(vault: object, row: PseudonymisedInstance) -> bytes:
    stored = StoredObject(str(row.object_key), str(row.key_id), str(row.sha256), row.size or 0)
    key = vault.keyring.data_key(stored.key_id)  # type: ignore[attr-defined]
    with open_decrypted(vault.store, key, stored) as stream:  # type: ignore[attr-defined]
        return stream.read()


def _peak_rss(pid: int) -> int:
    """The high-water mark of ``pid``'s resident memory since it started (``VmHWM``), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


def _wait_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not answer in time")


@dataclass
class VaultServer:
    url: str
    process: subprocess.Popen[bytes]
    warm_rss: int = 0  # peak from start through the warm-up request
    peak_rss: int = 0  # peak while serving the downloads


def _warm_up(server: VaultServer, study: Study) -> None:
    """One authenticated request (the first builds the authenticator, whose argon2
    dummy hash takes 64 MiB once), then the high-water mark is reset to the current
    RSS (``clear_refs`` 5), so that ``peak_rss`` covers the downloads alone."""
    bearer = {"Authorization": f"Bearer {study.token}"}
    httpx.get(f"{server.url}/api/engineer/studies", headers=bearer).raise_for_status()
    server.warm_rss = _peak_rss(server.process.pid)
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")


@contextmanager
def vault_server(study: Study) -> Iterator[VaultServer]:
    """``dicom-vault serve`` (API only) on the study's vault; its peak RSS read at the end."""
    port = free_port()
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(study.data_dir)}
    argv = [str(CLI), "serve", "--no-scp", "--host", "127.0.0.1", "--port", str(port)]
    log = (study.data_dir.parent / "serve.log").open("wb")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = VaultServer(f"http://127.0.0.1:{port}", process)
    try:
        _wait_http(f"{server.url}/healthz", process)
        _warm_up(server, study)
        yield server
        server.peak_rss = _peak_rss(process.pid)
    finally:
        stop_process(process)


def download(url: str, headers: dict[str, str] | None = None) -> int:
    """GET ``url`` streaming, counting and discarding the body; returns the bytes received."""
    received = 0
    with (
        httpx.Client(timeout=None, headers=headers) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"download answered {response.status_code}")
        expected = response.headers.get("content-length")
        for piece in response.iter_raw(1 << 20):
            received += len(piece)
    if expected is not None and int(expected) != received:
        raise RuntimeError("the download ended short")
    return received


def vault_runs(server: VaultServer, study: Study) -> dict[str, Callable[[], int]]:
    """The vault's two downloads, each returning the study bytes it delivered."""
    bearer = {"Authorization": f"Bearer {study.token}"}
    archive = f"{server.url}/api/engineer/studies/{study.pseudo_study_id}/archive"
    wado = f"{server.url}/dicomweb/studies/{study.study_uid}"

    def zip_run() -> int:
        download(archive, bearer)
        return study.study_bytes

    def wado_run() -> int:
        download(wado, {**bearer, "Accept": 'multipart/related; type="application/dicom"'})
        return study.study_bytes

    return {"vault ZIP": zip_run, "vault WADO-RS": wado_run}


@dataclass
class Orthanc:
    archive_url: str
    pid: int
    zip_bytes: int = 0

    def run(self, study: Study) -> Callable[[], int]:
        def orthanc_run() -> int:
            self.zip_bytes = download(self.archive_url)
            return study.study_bytes

        return orthanc_run


@contextmanager
def orthanc_holding(study: Study, root: Path) -> Iterator[Orthanc]:
    """Debian's Orthanc (fresh storage) holding the study's pseudonymised instances."""
    server, process = start_orthanc(root / "orthanc")
    try:
        with httpx.Client(base_url=server.url, timeout=None) as client:
            parents = {
                client.post("/instances", content=data).raise_for_status().json()["ParentStudy"]
                for data in study.instances or ()
            }
        (orthanc_id,) = parents
        httpx.get(f"{server.url}/studies/{orthanc_id}").raise_for_status()  # warm
        yield Orthanc(f"{server.url}/studies/{orthanc_id}/archive", process.pid)
    finally:
        stop_process(process)


def compared(args: argparse.Namespace, root: Path, slices: int) -> tuple[list[Figure], int]:
    """The three downloads of the same study; the figures and the vault's peak RSS."""
    rounds = args.rounds or (1 if args.quick else 2)
    study = prepare(root / "compared", slices, keep_files=True)
    with orthanc_holding(study, root) as orthanc, vault_server(study) as server:
        runs = {**vault_runs(server, study), "Orthanc archive": orthanc.run(study)}
        rates = interleaved_best_rates(runs, rounds)
        orthanc_rss = _peak_rss(orthanc.pid)
    zip_rate = rates["Orthanc archive"] * orthanc.zip_bytes / study.study_bytes
    figures = [
        Figure(f"vault ZIP, {slices} slices", rates["vault ZIP"] / MB, "MB/s"),
        Figure(f"vault WADO-RS, {slices} slices", rates["vault WADO-RS"] / MB, "MB/s"),
        Figure(f"Orthanc archive, {slices} slices", rates["Orthanc archive"] / MB, "MB/s"),
        Figure("Orthanc archive, as deflated ZIP bytes", zip_rate / MB, "MB/s"),
        Figure("vault ZIP / Orthanc", rates["vault ZIP"] / rates["Orthanc archive"], "x", 1.5),
        Figure("vault WADO-RS / Orthanc", rates["vault WADO-RS"] / rates["Orthanc archive"], "x"),
        Figure(f"vault peak RSS downloading, {slices} slices", server.peak_rss / MB, "MB"),
        Figure("vault peak RSS from start to warm", server.warm_rss / MB, "MB"),
        Figure("Orthanc peak RSS", orthanc_rss / MB, "MB"),
    ]
    return figures, server.peak_rss


def larger(root: Path, slices: int, small_rss: int) -> list[Figure]:
    """The vault side again on a larger study, in a fresh server: does the peak RSS grow?"""
    study = prepare(root / "larger", slices, keep_files=False)
    with vault_server(study) as server:
        rates = interleaved_best_rates(vault_runs(server, study), 1)
    return [
        Figure(f"vault ZIP, {slices} slices", rates["vault ZIP"] / MB, "MB/s"),
        Figure(f"vault WADO-RS, {slices} slices", rates["vault WADO-RS"] / MB, "MB/s"),
        Figure(f"vault peak RSS downloading, {slices} slices", server.peak_rss / MB, "MB"),
        Figure("vault peak RSS, larger / compared", server.peak_rss / small_rss, "x", 1.1, False),
    ]


def run(args: argparse.Namespace) -> list[Figure]:
    slices = args.slices or (100 if args.quick else 500)
    with tempfile.TemporaryDirectory(prefix="dv-bench-download-") as tmp:
        figures, small_rss = compared(args, Path(tmp), slices)
        if not args.quick:
            figures += larger(Path(tmp), args.large, small_rss)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv, extra=_extra)
    slices = args.slices or (100 if args.quick else 500)
    title = f"Study download, {slices} CT slices 512x512 pseudonymised, {os.cpu_count()} cores"
    report(run(args), args, title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
