"""Group commit of the receiver's catalog writes: shared transactions, separate fates.

Writers run in real threads against the embedded catalog (SQLite), and the
pipeline's own writes against both catalogs; each write appends an
access-log record, as every stored instance does.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, event, select
from sqlalchemy.exc import OperationalError

from dicom_ingest._group_commit import GroupCommitter
from dicom_ingest.pipeline import IngestResult
from dicom_ingest.synthetic import encode, make_ct_series
from tests.services.vault_env import CaseContext
from vault.audit import AuditRecord
from vault.catalog.models import AuditEvent, DataKeyRecord, Instance
from vault.core import Vault
from vault.reader import open_instance

WAIT = 60.0  # an upper bound for a hung thread, not a timing check


def audit_write(vault: Vault, n: int) -> Callable[[Connection], int]:
    def write(connection: Connection) -> int:
        vault.audit.append(connection, AuditRecord(actor="system", action="test", object_id=str(n)))
        return n

    return write


def count_commits(vault: Vault) -> list[int]:
    commits = [0]

    def on_commit(_connection: Connection) -> None:
        commits[0] += 1

    event.listen(vault.catalog.engine, "commit", on_commit)
    return commits


def recorded_ids(vault: Vault) -> list[str]:
    with vault.catalog.session() as session:
        return list(session.scalars(select(AuditEvent.object_id).order_by(AuditEvent.seq)))


class Blocker:
    """A first write that holds its transaction open until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, connection: Connection) -> str:
        self.entered.set()
        assert self.release.wait(WAIT)
        return "first"


def run_in_threads(
    calls: list[Callable[[], object]],
) -> tuple[list[object], list[threading.Thread]]:
    results: list[object] = [None] * len(calls)

    def runner(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    return results, threads


def queue_behind_blocker(
    committer: GroupCommitter, calls: list[Callable[[], object]]
) -> list[object]:
    """Run ``calls`` while a first write holds the transaction; return their results."""
    blocker = Blocker()
    first, first_threads = run_in_threads([lambda: committer.run(blocker)])
    assert blocker.entered.wait(WAIT)
    results, threads = run_in_threads(calls)
    deadline = time.monotonic() + WAIT
    while committer.queued < len(calls) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert committer.queued == len(calls)
    blocker.release.set()
    for thread in first_threads + threads:
        thread.join(WAIT)
    assert first == ["first"]
    return results


class TestGroupCommit:
    def test_writes_queued_during_a_commit_share_the_next_transaction(
        self, embedded_vault: Vault
    ) -> None:
        committer = GroupCommitter(embedded_vault.catalog.engine)
        commits = count_commits(embedded_vault)
        calls = [(lambda n=n: committer.run(audit_write(embedded_vault, n))) for n in range(6)]
        results = queue_behind_blocker(committer, calls)
        assert results == list(range(6))
        assert commits[0] == 2  # the blocker's transaction, then one for all six
        assert sorted(recorded_ids(embedded_vault), key=int) == [str(n) for n in range(6)]
        assert embedded_vault.audit.verify() == []

    def test_a_failing_write_fails_alone(self, embedded_vault: Vault) -> None:
        committer = GroupCommitter(embedded_vault.catalog.engine)

        def failing(connection: Connection) -> int:
            audit_write(embedded_vault, 99)(connection)
            raise ValueError("this write is refused")

        calls = [
            lambda: committer.run(audit_write(embedded_vault, 1)),
            lambda: committer.run(failing),
            lambda: committer.run(audit_write(embedded_vault, 2)),
        ]
        results = queue_behind_blocker(committer, calls)
        assert results[0] == 1 and results[2] == 2
        assert isinstance(results[1], ValueError)
        assert sorted(recorded_ids(embedded_vault)) == ["1", "2"]
        assert embedded_vault.audit.verify() == []

    def test_a_failed_commit_fails_every_write_of_the_batch_and_keeps_none(
        self, embedded_vault: Vault
    ) -> None:
        committer = GroupCommitter(embedded_vault.catalog.engine)

        def refuse_commit(_connection: Connection) -> None:
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

        event.listen(embedded_vault.catalog.engine, "commit", refuse_commit)
        try:
            with pytest.raises(OperationalError):
                committer.run(audit_write(embedded_vault, 7))
        finally:
            event.remove(embedded_vault.catalog.engine, "commit", refuse_commit)
        assert recorded_ids(embedded_vault) == []
        assert committer.run(audit_write(embedded_vault, 8)) == 8
        assert recorded_ids(embedded_vault) == ["8"]

    def test_sqlite_writer_commits_with_synchronous_full(self, embedded_vault: Vault) -> None:
        committer = GroupCommitter(embedded_vault.catalog.engine)

        def synchronous(connection: Connection) -> int:
            return int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or 0)

        assert committer.run(synchronous) == 2  # FULL: the WAL is synced at every commit


class TestNewStudyInASharedCommit:
    """Instances of a study not yet catalogued, arriving together (4 files at once from
    the upload page, or several associations) each bring a new data key; when their
    writes share one transaction, every key row must survive its write's savepoint."""

    def test_every_instance_is_stored_and_its_key_recorded(self, case: CaseContext) -> None:
        vault, pipeline = case.vault, case.pipeline
        files = [encode(ds) for ds in make_ct_series(4, rows=32, columns=32, seed=41)]
        calls = [
            (lambda data=data: pipeline.ingest(io.BytesIO(data), case.origin)) for data in files
        ]
        vault.keyring.generate()  # the key period is made now, not behind the blocker
        results = queue_behind_blocker(pipeline._writer, calls)  # all four in one transaction
        assert [type(r) for r in results] == [IngestResult] * len(files), results
        with vault.catalog.read_session() as session:
            rows = list(session.scalars(select(Instance)))
            assert len(rows) == len(files)
            for row in rows:
                assert session.get(DataKeyRecord, row.key_id) is not None
        for result in results:
            with open_instance(vault, result.instance_id) as stream:  # type: ignore[union-attr]
                assert stream.read() in files
