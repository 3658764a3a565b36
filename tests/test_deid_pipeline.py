"""The de-identification pipeline: settled study -> pseudonymised copy, eagerly and on Redis.

Studies are small synthetic CT studies (two series, 64x64) with identifiers
planted everywhere the profile covers. Embedded tests run Celery eagerly (no
broker); ``redis`` tests send the task through the machine's Redis to a real
worker running in a thread of this process (it shares the test's vault, so a
fault can be injected into its object store).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from crypto.errors import IntegrityError
from deidentify import PatientIdDomain, pseudonym
from deidentify.pipeline import StudyDeidentifier, engine_for
from deidentify.tasks import TASK_NAME, VaultCelery, create_celery_app, register_deidentification
from dicom_ingest import IngestPipeline, ValidationPolicy
from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series, write_series
from tests.deidentify_support import burned_in_capture
from tests.services.celery_worker import CLI, worker_process
from tests.services.vault_env import CaseContext, make_case
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import AuditEvent, Instance, Study
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.errors import StorageUnavailable
from vault.objects import StoredObject, open_decrypted
from vault.settings import CelerySettings, Settings
from vault.settle import StudySettledHooks, settle_study
from vault.store import ObjectStore

FINAL = {"done", "quarantined", "failed"}
WORKER_WAIT_SECONDS = 120  # a hang guard only: nothing asserts on time


# --- building and reading studies ---------------------------------------


def study_datasets(patient: SyntheticPatient, seed: int) -> list[Dataset]:
    """Two series of one study (3 + 2 slices); the second refers to the first's slice."""
    study_uid = generate_uid(entropy_srcs=[patient.patient_id, str(seed), "study"])
    first = list(
        make_ct_series(
            3, rows=64, columns=64, patient=patient, seed=seed, study_uid=study_uid, plant_phi=True
        )
    )
    second = list(
        make_ct_series(
            2,
            rows=64,
            columns=64,
            patient=patient,
            seed=seed,
            study_uid=study_uid,
            series_number=2,
            slice_thickness=2.0,
            plant_phi=True,
            references=first[:1],
        )
    )
    return first + second


def ingest(
    case: CaseContext, datasets: list[Dataset], pipeline: IngestPipeline | None = None
) -> str:
    """Ingest ``datasets`` into ``case``; the study's internal id."""
    results = [
        (pipeline or case.pipeline).ingest(io.BytesIO(encode(ds)), case.origin) for ds in datasets
    ]
    assert len({r.study_id for r in results}) == 1
    return results[0].study_id


def permissive_pipeline(vault: Vault) -> IngestPipeline:
    policy = ValidationPolicy.from_settings(vault.settings.policy)
    sop_classes = policy.sop_classes | {SecondaryCaptureImageStorage}
    return IngestPipeline(vault, ValidationPolicy(sop_classes, policy.transfer_syntaxes))


def copy_of(vault: Vault, study_id: str) -> tuple[PseudonymisedStudy, list[PseudonymisedInstance]]:
    with vault.catalog.session() as session:
        study = session.scalar(
            select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
        )
        assert study is not None
        rows = list(
            session.scalars(
                select(PseudonymisedInstance)
                .where(PseudonymisedInstance.pseudo_study_id == study.id)
                .order_by(PseudonymisedInstance.id)
            )
        )
    return study, rows


def decrypted(vault: Vault, row: PseudonymisedInstance) -> bytes:
    assert row.object_key and row.key_id and row.sha256 and row.size is not None
    stored = StoredObject(row.object_key, row.key_id, row.sha256, row.size)
    with open_decrypted(vault.store, vault.keyring.data_key(row.key_id), stored) as stream:
        data = stream.read()
    assert data[128:132] == b"DICM"  # a whole Part 10 file, not an empty object
    return data


def original_bytes(vault: Vault, instance_id: str) -> bytes:
    from vault.reader import open_instance

    with open_instance(vault, instance_id) as stream:
        return stream.read()


def original_object_keys(vault: Vault) -> set[str]:
    with vault.catalog.session() as session:
        return set(session.scalars(select(Instance.object_key)))


def audit_actions(vault: Vault, action: str) -> list[AuditEvent]:
    return [event for event in vault.audit.events() if event.action == action]


def wait_for_final_state(vault: Vault, study_id: str) -> str:
    """Poll the copy's state until it is final (a hang guard, not a timing check)."""
    deadline = time.monotonic() + WORKER_WAIT_SECONDS
    while time.monotonic() < deadline:
        with vault.catalog.session() as session:
            state = session.scalar(
                select(PseudonymisedStudy.state).where(PseudonymisedStudy.study_id == study_id)
            )
        if state in FINAL:
            return state
        time.sleep(0.05)
    pytest.fail("the worker did not finish the study")


# --- Celery apps --------------------------------------------------------


def settle_with(app: VaultCelery, vault: Vault, study_id: str) -> None:
    hooks = StudySettledHooks()
    register_deidentification(hooks, app)
    assert settle_study(vault, study_id, hooks)


@pytest.fixture
def eager_app(embedded_vault: Vault) -> VaultCelery:
    """The embedded default: no broker, tasks run in this process."""
    assert embedded_vault.settings.celery.broker_url is None
    return create_celery_app(embedded_vault.settings, vault=embedded_vault)


def redis_app(vault: Vault, redis_url: str, **celery: Any) -> VaultCelery:
    """An app sending to Redis, on a queue of its own (no test sees another's messages)."""
    queue = f"deid-test-{generate_uid().rsplit('.', 1)[-1]}"
    options = {
        "broker_url": redis_url,
        "result_backend": redis_url,
        "queue": queue,
        "retry_backoff_seconds": 0.0,
        **celery,
    }
    settings = vault.settings.model_copy(update={"celery": CelerySettings(**options)})
    return create_celery_app(settings, vault=vault)


@contextmanager
def running_worker(app: VaultCelery) -> Iterator[None]:
    """A real Celery worker consuming ``app``'s queue, in a thread of this process."""
    with start_worker(
        app, pool="solo", perform_ping_check=False, shutdown_timeout=30, loglevel="WARNING"
    ):
        yield


@pytest.fixture
def worker_app(embedded_vault: Vault, redis_url: str) -> Iterator[VaultCelery]:
    app = redis_app(embedded_vault, redis_url)
    with running_worker(app):
        yield app


@pytest.fixture
def patient() -> SyntheticPatient:
    return SyntheticPatient()


@pytest.fixture
def settled_copy(
    embedded_case: CaseContext, eager_app: VaultCelery, patient: SyntheticPatient
) -> tuple[Vault, str]:
    """A PHI-planted two-series study, ingested and settled eagerly: (vault, study id)."""
    study_id = ingest(embedded_case, study_datasets(patient, seed=1))
    settle_with(eager_app, embedded_case.vault, study_id)
    return embedded_case.vault, study_id


# --- the tests ------------------------------------------------------------


class TestSettledStudyIsPseudonymised:
    def test_settled_study_ends_done_with_every_instance_stored(self, settled_copy):
        vault, study_id = settled_copy
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.reason) == ("done", None)
        assert (study.instance_count, study.quarantined_count, study.attempts) == (5, 0, 1)
        assert [row.state for row in rows] == ["done"] * 5
        assert study.pseudonym and study.pseudonym.startswith("PSN-")

    def test_no_planted_identifier_survives_in_any_case(self, settled_copy, patient):
        vault, study_id = settled_copy
        _, rows = copy_of(vault, study_id)
        markers = patient.markers()
        assert markers
        for row in rows:
            data = decrypted(vault, row)
            for variant in (data, data.lower(), data.upper()):
                for marker in markers:
                    for form in {marker, marker.lower(), marker.upper()}:
                        assert form.encode("latin-1") not in variant

    def test_no_original_uid_survives(self, settled_copy):
        vault, study_id = settled_copy
        _, rows = copy_of(vault, study_id)
        for row in rows:
            original = pydicom.dcmread(io.BytesIO(original_bytes(vault, row.source_instance_id)))
            data = decrypted(vault, row)
            for uid in (
                original.StudyInstanceUID,
                original.SeriesInstanceUID,
                original.SOPInstanceUID,
                original.FrameOfReferenceUID,
            ):
                assert uid.encode() not in data

    def test_pixels_are_bit_exact(self, settled_copy):
        vault, study_id = settled_copy
        _, rows = copy_of(vault, study_id)
        for row in rows:
            original = pydicom.dcmread(io.BytesIO(original_bytes(vault, row.source_instance_id)))
            copy = pydicom.dcmread(io.BytesIO(decrypted(vault, row)))
            assert copy.PixelData == original.PixelData
            assert (copy.Rows, copy.Columns) == (original.Rows, original.Columns)
            assert copy.ImagePositionPatient == original.ImagePositionPatient

    def test_uid_references_stay_consistent_inside_the_copy(self, settled_copy):
        vault, study_id = settled_copy
        study, rows = copy_of(vault, study_id)
        copies = [pydicom.dcmread(io.BytesIO(decrypted(vault, row))) for row in rows]
        sop_uids = {ds.SOPInstanceUID for ds in copies}
        assert sop_uids == {row.pseudo_sop_uid for row in rows}
        assert {ds.StudyInstanceUID for ds in copies} == {study.pseudo_study_uid}
        assert len({ds.SeriesInstanceUID for ds in copies}) == 2
        referenced = set()
        for ds, row in zip(copies, rows, strict=True):
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            assert ds.SeriesInstanceUID == row.pseudo_series_uid
            assert ds.SOPInstanceUID.startswith("2.25.")
            referenced |= {
                item.ReferencedSOPInstanceUID for item in ds.get("ReferencedImageSequence", [])
            }
        assert referenced
        assert referenced <= sop_uids

    def test_copy_is_encrypted_under_its_own_data_key(self, settled_copy):
        vault, study_id = settled_copy
        study, rows = copy_of(vault, study_id)
        with vault.catalog.session() as session:
            original_key = session.get(Study, study_id).data_key_id
        assert study.data_key_id not in (None, original_key)
        assert {row.key_id for row in rows} == {study.data_key_id}
        stored = StoredObject(rows[0].object_key, rows[0].key_id, rows[0].sha256, rows[0].size)
        wrong_key = vault.keyring.data_key(original_key)
        with pytest.raises(IntegrityError), open_decrypted(vault.store, wrong_key, stored) as s:
            s.read()

    def test_catalog_rows_hold_no_identifier(self, settled_copy, patient):
        vault, study_id = settled_copy
        study, rows = copy_of(vault, study_id)
        values = [str(getattr(r, c.key)) for r in [study, *rows] for c in r.__table__.columns]
        text = " ".join(values).lower()
        for marker in patient.markers():
            assert marker.lower() not in text

    def test_deidentification_is_in_the_access_log_without_phi(self, settled_copy, patient):
        vault, study_id = settled_copy
        study, _ = copy_of(vault, study_id)
        (event,) = audit_actions(vault, "study.deidentify")
        assert (event.actor, event.outcome, event.object_id) == ("system", "success", study_id)
        assert study.id in event.detail
        for marker in patient.markers():
            assert marker.lower() not in event.detail.lower()
        assert vault.audit.verify() == []


class TestOnEveryDeployment:
    def test_settled_study_is_pseudonymised_and_decrypts(self, case, patient):
        vault = case.vault
        study_id = ingest(case, study_datasets(patient, seed=2))
        settle_with(create_celery_app(vault.settings, vault=vault), vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.instance_count) == ("done", 5)
        markers = [m.lower().encode("latin-1") for m in patient.markers()]
        for row in rows:
            data = decrypted(vault, row).lower()
            assert not [m for m in markers if m in data]


class TestPseudonymConsistency:
    def test_same_patient_in_two_studies_gets_one_pseudonym(self, embedded_vault, eager_app):
        patient = SyntheticPatient()
        first = ingest(make_case(embedded_vault, "CASE-A"), study_datasets(patient, seed=1))
        second = ingest(make_case(embedded_vault, "CASE-B"), study_datasets(patient, seed=2))
        assert first != second
        for study_id in (first, second):
            settle_with(eager_app, embedded_vault, study_id)
        one, two = copy_of(embedded_vault, first)[0], copy_of(embedded_vault, second)[0]
        assert one.pseudonym == two.pseudonym
        assert one.pseudo_study_uid != two.pseudo_study_uid

    def test_different_patients_get_different_pseudonyms(self, embedded_vault, eager_app):
        studies = []
        for seed in (11, 12):
            case = make_case(embedded_vault, f"CASE-{seed}")
            studies.append(ingest(case, study_datasets(SyntheticPatient.generate(seed), seed)))
        for study_id in studies:
            settle_with(eager_app, embedded_vault, study_id)
        pseudonyms = {copy_of(embedded_vault, s)[0].pseudonym for s in studies}
        assert len(pseudonyms) == 2

    def test_pseudonym_comes_from_the_providers_pseudonym_key(self, settled_copy, patient):
        vault, study_id = settled_copy
        mac_key = vault.keyring.provider.mac_key("pseudonym")
        issuer = PatientIdDomain.of_issuer(patient.issuer_of_patient_id)  # registered by none
        expected = pseudonym(mac_key, patient.patient_id, issuer)
        assert copy_of(vault, study_id)[0].pseudonym == expected


class TestQuarantine:
    def test_burned_in_capture_is_held_back_and_not_stored(self, embedded_case, eager_app):
        vault = embedded_case.vault
        datasets = study_datasets(SyntheticPatient(), seed=3)
        datasets.append(burned_in_capture(datasets[0]))
        study_id = ingest(embedded_case, datasets, permissive_pipeline(vault))
        settle_with(eager_app, vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.instance_count, study.quarantined_count) == ("done", 5, 1)
        (held,) = [row for row in rows if row.state == "quarantined"]
        assert held.reason == "burned-in-annotation"
        assert held.sop_class_uid == SecondaryCaptureImageStorage
        assert (held.object_key, held.key_id, held.pseudo_sop_uid) == (None, None, None)
        stored = {row.object_key for row in rows if row.object_key}
        assert set(vault.store.iter_keys()) == original_object_keys(vault) | stored

    def test_study_of_only_quarantined_instances_ends_quarantined(self, embedded_case, eager_app):
        vault = embedded_case.vault
        (like,) = make_ct_series(1, rows=64, columns=64, plant_phi=True)
        study_id = ingest(embedded_case, [burned_in_capture(like)], permissive_pipeline(vault))
        settle_with(eager_app, vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.reason) == ("quarantined", "all-instances-quarantined")
        assert [row.state for row in rows] == ["quarantined"]
        assert set(vault.store.iter_keys()) == original_object_keys(vault)
        (event,) = audit_actions(vault, "study.deidentify")
        assert event.outcome.startswith("quarantined")


class TestIdempotentRerun:
    def test_rerunning_a_done_study_adds_no_row_object_or_record(self, settled_copy, eager_app):
        vault, study_id = settled_copy
        before_rows = copy_of(vault, study_id)[1]
        before_keys = set(vault.store.iter_keys())
        eager_app.deidentify_study.delay(study_id)
        summary = StudyDeidentifier(vault).run(study_id)
        assert (summary.state, summary.processed) == ("done", 0)
        study, rows = copy_of(vault, study_id)
        assert [r.id for r in rows] == [r.id for r in before_rows]
        assert set(vault.store.iter_keys()) == before_keys
        assert (study.attempts, len(audit_actions(vault, "study.deidentify"))) == (1, 1)

    def test_run_after_a_crash_mid_study_resumes_without_duplicates(self, embedded_case):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=4))
        engine = engine_for(vault)
        calls = {"n": 0}
        real = engine.deidentify_bytes

        def crash_on_third(data: bytes, **options: Any):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("worker crashed")
            return real(data, **options)

        engine.deidentify_bytes = crash_on_third  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            StudyDeidentifier(vault, engine).run(study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, len(rows)) == ("running", 2)
        summary = StudyDeidentifier(vault).run(study_id)
        study, rows = copy_of(vault, study_id)
        assert (summary.processed, study.state, study.attempts) == (3, "done", 2)
        assert len({row.source_instance_id for row in rows}) == len(rows) == 5
        stored = {row.object_key for row in rows}
        assert set(vault.store.iter_keys()) == original_object_keys(vault) | stored

    def test_instance_arriving_after_done_is_added_by_the_next_run(self, embedded_case):
        vault = embedded_case.vault
        datasets = study_datasets(SyntheticPatient(), seed=5)
        study_id = ingest(embedded_case, datasets[:4])
        assert StudyDeidentifier(vault).run(study_id).instance_count == 4
        ingest(embedded_case, datasets[4:])
        summary = StudyDeidentifier(vault).run(study_id)
        assert (summary.processed, summary.instance_count, summary.state) == (1, 5, "done")


class _FailingWriter:
    """Wraps a real writer; its first write raises (the store went away)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.key = inner.key

    def write(self, data: bytes) -> int:
        raise StorageUnavailable("injected: the object store went away")

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def __enter__(self) -> _FailingWriter:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._inner.__exit__(*exc)


def fail_writes(store: ObjectStore, monkeypatch: pytest.MonkeyPatch, *, at: set[int]) -> dict:
    """Make the store's writes number ``at`` (1-based) fail; returns the call counter."""
    real = store.open_writer
    calls = {"n": 0}

    def open_writer(key: str | None = None) -> Any:
        calls["n"] += 1
        writer = real(key)
        return _FailingWriter(writer) if calls["n"] in at else writer

    monkeypatch.setattr(store, "open_writer", open_writer)
    return calls


class TestTransientFailureIsRetried:
    @pytest.mark.parametrize("mode", ["eager", pytest.param("worker", marks=pytest.mark.redis)])
    def test_store_failure_mid_study_is_retried_and_ends_done_without_orphans(
        self, mode, embedded_case, monkeypatch, request
    ):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=6))
        calls = fail_writes(vault.store, monkeypatch, at={3})
        if mode == "eager":
            settle_with(create_celery_app(vault.settings, vault=vault), vault, study_id)
        else:
            app = redis_app(vault, request.getfixturevalue("redis_url"))
            with running_worker(app):
                settle_with(app, vault, study_id)
                wait_for_final_state(vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.attempts, study.reason) == ("done", 2, None)
        assert calls["n"] == 6  # five writes and the one that failed
        assert len({row.source_instance_id for row in rows}) == len(rows) == 5
        stored = {row.object_key for row in rows}
        assert set(vault.store.iter_keys()) == original_object_keys(vault) | stored

    def test_failure_outlasting_the_retries_ends_failed_with_a_code(
        self, embedded_case, monkeypatch
    ):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=7))
        fail_writes(vault.store, monkeypatch, at=set(range(1, 100)))
        settings = vault.settings.model_copy(update={"celery": CelerySettings(max_retries=2)})
        settle_with(create_celery_app(settings, vault=vault), vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.reason, study.attempts) == ("failed", "storage-unavailable", 3)
        assert rows == []
        assert set(vault.store.iter_keys()) == original_object_keys(vault)
        (event,) = audit_actions(vault, "study.deidentify")
        assert event.outcome == "failed:storage-unavailable"


class TestPermanentFailure:
    def test_erased_original_fails_with_a_phi_free_reason(self, embedded_case, eager_app):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=8))
        with vault.catalog.session() as session:
            key_id = session.get(Study, study_id).data_key_id
            vault.keyring.destroy(key_id, session=session)
        settle_with(eager_app, vault, study_id)
        study, rows = copy_of(vault, study_id)
        assert (study.state, study.reason, rows) == ("failed", "destroyed", [])
        assert study.attempts == 1  # not retried: the data is gone for good


@pytest.mark.redis
class TestRedisWorker:
    def test_settled_study_is_queued_until_a_worker_takes_it(self, embedded_case, redis_url):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=9))
        app = redis_app(vault, redis_url)
        settle_with(app, vault, study_id)
        assert copy_of(vault, study_id)[0].state == "queued"
        with running_worker(app):
            assert wait_for_final_state(vault, study_id) == "done"
        assert copy_of(vault, study_id)[0].instance_count == 5

    def test_task_message_carries_only_the_study_id(self, embedded_case, worker_app):
        vault = embedded_case.vault
        study_id = ingest(embedded_case, study_datasets(SyntheticPatient(), seed=10))
        sent: list[dict[str, Any]] = []

        def capture(sender: str | None = None, body: Any = None, headers: Any = None, **_: Any):
            if sender == TASK_NAME:
                sent.append({"body": body, "headers": headers})

        before_task_publish.connect(capture, weak=False)
        try:
            settle_with(worker_app, vault, study_id)
            assert wait_for_final_state(vault, study_id) == "done"
        finally:
            before_task_publish.disconnect(capture)
        (message,) = sent
        args, kwargs, _embed = message["body"]
        assert (list(args), kwargs) == ([study_id], {})
        text = repr(message).lower()
        for marker in SyntheticPatient().markers():
            assert marker.lower() not in text
        assert "key" not in {k.lower() for k in message["headers"]}


class TestConfiguration:
    def test_without_a_broker_tasks_run_eagerly_in_process(self, eager_app):
        assert eager_app.conf.task_always_eager is True
        assert eager_app.conf.broker_url == "memory://"

    def test_with_a_broker_tasks_go_to_workers_and_are_acknowledged_late(self, tmp_path):
        celery = CelerySettings(broker_url="redis://127.0.0.1:6379/15", task_time_limit_seconds=100)
        app = create_celery_app(Settings(data_dir=tmp_path, celery=celery))
        assert app.conf.task_always_eager is False
        assert app.deidentify_study.acks_late is True
        assert (app.conf.task_time_limit, app.conf.task_soft_time_limit) == (100, 90)


# --- the command line: a worker process, offline de-identification ------


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir), **extra}


class TestCommandLine:
    @pytest.mark.redis
    def test_worker_process_deidentifies_a_settled_study(self, tmp_path, redis_url):
        data_dir = tmp_path / "var"
        celery = CelerySettings(broker_url=redis_url, queue=f"deid-cli-{os.getpid()}")
        settings = Settings(data_dir=data_dir, celery=celery)
        vault = open_vault(settings, clock=FrozenClock())
        try:
            study_id = ingest(make_case(vault), study_datasets(SyntheticPatient(), seed=13))
            env = cli_env(
                data_dir,
                DICOM_VAULT_CELERY__BROKER_URL=redis_url,
                DICOM_VAULT_CELERY__QUEUE=celery.queue,
            )
            with worker_process(env, stderr=subprocess.PIPE, loglevel="INFO") as process:
                settle_with(create_celery_app(settings, vault=vault), vault, study_id)
                state = wait_for_final_state(vault, study_id)
                assert process.poll() is None
            assert (state, copy_of(vault, study_id)[0].instance_count) == ("done", 5)
            # Celery logs through the vault's handler (redaction, withheld messages)
            logged = process.stderr.read().decode() if process.stderr else ""
            assert " INFO celery.apps.worker: worker-" in logged
        finally:
            vault.close()

    def test_worker_refuses_to_start_without_a_broker(self, tmp_path):
        result = subprocess.run(
            [str(CLI), "worker"],
            env=cli_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2
        assert "no broker" in result.stderr

    def test_offline_deidentify_uses_the_deployments_pseudonym(self, tmp_path, embedded_case):
        vault = embedded_case.vault
        patient = SyntheticPatient()
        datasets = study_datasets(patient, seed=14)
        folder = tmp_path / "in"
        write_series(folder, [*datasets, burned_in_capture(datasets[0])])
        out = tmp_path / "out"
        result = subprocess.run(
            [str(CLI), "deidentify", str(folder), "--out", str(out), "--report"],
            env=cli_env(vault.settings.data_dir),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "written 5, quarantined 1 (burned-in-annotation 1)" in result.stdout
        written = sorted(out.rglob("*.dcm"))
        assert len(written) == 5
        mac_key = vault.keyring.provider.mac_key("pseudonym")
        issuer = PatientIdDomain.of_issuer(patient.issuer_of_patient_id)  # registered by none
        expected = pseudonym(mac_key, patient.patient_id, issuer)
        assert {path.relative_to(out).parts[0] for path in written} == {expected}
        assert (out / "deidentification-report.json").is_file()
        for path in written:
            data = path.read_bytes().lower()
            assert not [m for m in patient.markers() if m.lower().encode("latin-1") in data]
