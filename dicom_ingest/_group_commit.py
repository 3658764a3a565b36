"""Group commit of the ingest pipeline's catalog writes (private).

Every received instance ends in one small write transaction (instance row,
counters, access-log record). Committed one by one, concurrent senders
queue on the catalog's single write lock and each pays its own durable
commit. :class:`GroupCommitter` lets them share: the first caller to find
no commit in progress becomes the leader, takes every write queued so far,
runs them in ONE transaction (each inside its own savepoint, so one failing
write does not undo the others) and commits once; the callers whose writes
were in that batch are then released with their results. Nobody is told
"stored" before the transaction holding their write has committed.

On SQLite every catalog connection runs with ``synchronous=FULL`` (see
:mod:`vault.catalog.db`); with group commit its WAL fsync is paid once per
batch, not per instance.
Receiver processes sharing one SQLite file (``scp.processes`` > 1) also take
turns on an ``flock`` next to it before their transaction: a waiting process
is woken the moment the lock is free, where SQLite's own busy handler would
poll with sleeps of 1 ms and more.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine

T = TypeVar("T")
Write = Callable[[Connection], T]


@dataclass
class _Job(Generic[T]):
    write: Write[T]
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommitter:
    """Runs catalog writes from many threads in shared transactions."""

    def __init__(self, engine: Engine, *, max_batch: int = 64) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: list[_Job[Any]] = []
        self._leading = False
        self._cond = threading.Condition()
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._lock_path = f"{database}.writers" if database and database != ":memory:" else None

    @property
    def queued(self) -> int:
        """Writes waiting for the next transaction (for monitoring and tests)."""
        with self._cond:
            return len(self._queue)

    def run(self, write: Write[T]) -> T:
        """Run ``write`` in a catalog transaction; return its result once committed.

        Raises:
            whatever ``write`` raised (its savepoint rolled back, others kept),
            or the commit's own error (then no write of the batch was kept).
        """
        job: _Job[T] = _Job(write)
        with self._cond:
            self._queue.append(job)
        while not job.done:
            batch = self._lead_or_wait(job)
            if batch:
                try:
                    self._commit(batch)
                finally:
                    with self._cond:
                        self._leading = False
                        self._cond.notify_all()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[no-any-return]

    def _lead_or_wait(self, job: _Job[Any]) -> list[_Job[Any]]:
        """Wait while another thread commits; then, if ``job`` is still queued,
        lead: take the queue (up to ``max_batch``) and return it."""
        with self._cond:
            while self._leading and not job.done:
                self._cond.wait()
            if job.done:
                return []
            self._leading = True
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            return batch

    @contextmanager
    def _writers_turn(self) -> Iterator[None]:
        """Hold the SQLite file's writers lock (no-op on other databases)."""
        if self._lock_path is None:
            yield
            return
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with (
                self._writers_turn(),
                self._engine.connect() as connection,
                connection.begin(),
            ):
                for job in batch:
                    _run_one(connection, job, isolated=len(batch) > 1)
        except BaseException as exc:  # noqa: BLE001 (reported to every writer of the batch)
            for job in batch:
                if job.error is None:
                    job.result, job.error = None, exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True


def _run_one(connection: Connection, job: _Job[Any], *, isolated: bool) -> None:
    """Run one write, in a savepoint when it shares the transaction."""
    if not isolated:
        job.result = job.write(connection)
        return
    savepoint = connection.begin_nested()
    try:
        job.result = job.write(connection)
    except Exception as exc:  # noqa: BLE001 (this write fails alone)
        savepoint.rollback()
        job.error = exc
        return
    savepoint.commit()
