"""The whole de-identification pipeline, timed: study settled -> pseudonymised copy ready.

A fresh embedded vault (SQLite catalog, filesystem store, local key file) in
a scratch directory receives the series through the ingest pipeline
(untimed). A ``dicom-vault worker`` process is started on a real Redis
broker (a free database of the machine's server, flushed afterwards) and
awaited with a Celery ping. The clock then runs from ``settle_study`` (which
queues the study) until the catalog shows the pseudonymised copy ``done``;
afterwards every pseudonymised instance is decrypted and searched for the
planted identifiers (untimed).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import select

from benchmarks._common import Figure
from deidentify.tasks import VaultCelery, create_celery_app, register_deidentification
from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import SyntheticPatient
from tests.services.celery_worker import worker_process
from vault.admin import create_case, get_or_create_organisation
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.core import Vault, open_vault
from vault.objects import StoredObject, open_decrypted
from vault.settings import CelerySettings, Settings
from vault.settle import StudySettledHooks, settle_study

TARGET_SECONDS = 30.0
WAIT_SECONDS = 600.0  # gives up on a stuck worker
CLAIM_KEY = "dicom-vault-bench:claimed-by"
CLI = Path(sys.executable).with_name("dicom-vault")


@contextmanager
def redis_database(server: str) -> Iterator[str]:
    """The URL of an empty database (1-15) of ``server``, claimed, flushed afterwards."""
    token = secrets.token_hex(8)
    for db in range(1, 16):
        client = redis.Redis.from_url(f"{server}/{db}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, token, nx=True):
            try:
                yield f"{server}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no empty Redis database among 1-15")


def ingest_series(vault: Vault, files: list[Path]) -> str:
    """Store the series in a new case; the study's internal id."""
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Benchmark Hospital")
        case = create_case(session, "BENCH-0001", organisation)
        origin = IngestOrigin("cli", "cli", organisation.id, case.id)
    pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
    study_ids = set()
    for path in files:
        with path.open("rb") as source:
            study_ids.add(pipeline.ingest(source, origin).study_id)
    (study_id,) = study_ids
    return study_id


def worker_env(data_dir: Path, celery: CelerySettings) -> dict[str, str]:
    """The environment of a ``dicom-vault worker`` on ``data_dir``'s vault and broker."""
    return {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(data_dir),
        "DICOM_VAULT_CELERY__BROKER_URL": celery.broker_url or "",
        "DICOM_VAULT_CELERY__QUEUE": celery.queue,
    }


def wait_until_ready(app: VaultCelery, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the worker process exited")
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError("the worker did not answer a ping")


def wait_until_final(vault: Vault, study_id: str) -> str:
    query = select(PseudonymisedStudy.state).where(PseudonymisedStudy.study_id == study_id)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        with vault.catalog.session() as session:
            state = session.scalar(query)
        if state in {"done", "quarantined", "failed"}:
            return state
        time.sleep(0.02)
    raise RuntimeError("the pseudonymised copy was not ready in time")


def surviving_markers(vault: Vault, study_id: str) -> tuple[int, int]:
    """(planted identifiers found in any decrypted copy, instances decrypted)."""
    markers = [m.lower().encode() for m in SyntheticPatient().markers()]
    query = (
        select(PseudonymisedInstance)
        .join(PseudonymisedStudy)
        .where(PseudonymisedStudy.study_id == study_id, PseudonymisedInstance.state == "done")
    )
    with vault.catalog.session() as session:
        rows = list(session.scalars(query))
    found: set[bytes] = set()
    for row in rows:
        stored = StoredObject(str(row.object_key), str(row.key_id), str(row.sha256), row.size or 0)
        key = vault.keyring.data_key(stored.key_id)
        with open_decrypted(vault.store, key, stored) as stream:
            data = stream.read().lower()
        found.update(m for m in markers if m in data)
    return len(found), len(rows)


def measure(files: list[Path], work: Path, redis_server: str) -> list[Figure]:
    """Seconds from settle to the pseudonymised copy ready, through Redis and a worker."""
    with redis_database(redis_server) as broker:
        celery = CelerySettings(broker_url=broker, queue="bench-deidentify")
        settings = Settings(data_dir=work / "pipeline-vault", celery=celery)
        vault = open_vault(settings)
        try:
            study_id = ingest_series(vault, files)
            app = create_celery_app(settings, vault=vault)
            hooks = StudySettledHooks()
            register_deidentification(hooks, app)
            with worker_process(worker_env(settings.data_dir, celery)) as process:
                wait_until_ready(app, process)
                start = time.perf_counter()
                settle_study(vault, study_id, hooks)
                state = wait_until_final(vault, study_id)
                seconds = time.perf_counter() - start
            if state != "done":
                raise RuntimeError(f"the pseudonymised copy ended {state}")
            found, count = surviving_markers(vault, study_id)
        finally:
            vault.close()
    n = len(files)
    return [
        Figure(f"pipeline settle -> copy ready, {n} slices", seconds, "s", TARGET_SECONDS, False),
        Figure("pipeline rate (Redis broker, one worker)", n / seconds, "instances/s"),
        Figure("pipeline instances pseudonymised", float(count), "instances", float(n)),
        Figure("pipeline planted identifiers surviving", float(found), "markers", 0.0, False),
    ]
