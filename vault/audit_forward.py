"""Live forwarding of the access log to a syslog collector, never in anyone's way.

An :class:`AuditForwarder` follows the access log in the catalog: a tail
thread reads records past its cursor (so only committed records, in chain
order, from every process writing the log: API, C-STORE receiver, workers,
CLI), renders each as a DICOM Audit Message in an RFC 5424 message
(:mod:`vault.audit_atna`, :mod:`vault.audit_syslog`) and puts it on a
bounded queue; a sender thread sends the queue over TLS to the collector,
reconnecting with back-off. Nothing on the ingest or request path waits for
it: records are appended by :class:`vault.audit.AuditLog` as before.

When the queue is full (collector down or slow), new records are dropped,
not waited for: each drop is counted, and once the queue has room again a
record ``audit.forward-drop`` (outcome ``dropped``, with the count and the
first and last sequence numbers missed) is appended to the log, so the gap
is itself audited and can be filled from ``dicom-vault audit export``.

The catalog stays the record of truth; run one forwarder per deployment
(``dicom-vault audit forward``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from vault.audit import AuditRecord
from vault.audit_atna import atna_xml
from vault.audit_export import audit_source
from vault.audit_message import describe
from vault.audit_syslog import TlsSyslogSender, octet_frame, syslog_message
from vault.catalog.models import AuditEvent
from vault.core import Vault

BATCH = 1000
MAX_BACKOFF_SECONDS = 30.0

log = logging.getLogger("vault.audit_forward")


@dataclass(frozen=True)
class ForwardStats:
    sent: int
    dropped: int
    connect_failures: int
    cursor: int


class _DropLedger:
    """Dropped records not yet recorded in the log: how many, lowest and highest seq."""

    def __init__(self) -> None:
        self.total = 0
        self.pending = 0
        self.first = 0
        self.last = 0

    def add(self, seq: int) -> None:
        self.first = seq if self.pending == 0 else min(self.first, seq)
        self.last = seq if self.pending == 0 else max(self.last, seq)
        self.total += 1
        self.pending += 1

    def take(self) -> dict[str, int]:
        detail = {"dropped": self.pending, "first": self.first, "last": self.last}
        self.pending = 0
        return detail


class AuditForwarder:
    """Follows the access log and forwards it (see the module docstring)."""

    def __init__(self, vault: Vault, *, start_after: int | None = None) -> None:
        """Forward records after ``start_after`` (default: those recorded from now on)."""
        self._vault = vault
        self._settings = vault.settings.audit.syslog
        self._sender = TlsSyslogSender(self._settings)
        self._source = audit_source(vault)
        self._queue: queue.Queue[tuple[int, bytes]] = queue.Queue(self._settings.queue_size)
        self._cursor = self._last_seq() if start_after is None else start_after
        self._drops = _DropLedger()
        self._sent = self._failures = 0
        self._lock = threading.Lock()
        self._tail_stop = threading.Event()
        self._send_stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _last_seq(self) -> int:
        with self._vault.catalog.read_session() as session:
            return session.scalar(select(func.max(AuditEvent.seq))) or 0

    @property
    def stats(self) -> ForwardStats:
        with self._lock:
            return ForwardStats(self._sent, self._drops.total, self._failures, self._cursor)

    def _frame(self, row: AuditEvent) -> bytes:
        message = describe(row, self._source)
        payload = syslog_message(
            atna_xml(message),
            indicator=message.indicator,
            at=message.at,
            hostname=self._source.host,
            app_name=self._settings.app_name,
        )
        return octet_frame(payload)

    def poll(self) -> int:
        """Queue the records committed past the cursor; how many were read."""
        query = (
            select(AuditEvent.__table__)
            .where(AuditEvent.seq > self._cursor)
            .order_by(AuditEvent.seq)
            .limit(BATCH)
        )
        with self._vault.catalog.read_session() as session:
            rows = session.execute(query).all()
        for row in rows:
            self._enqueue(row.seq, self._frame(row))
        self._record_drops()
        return len(rows)

    def _enqueue(self, seq: int, frame: bytes) -> None:
        try:
            self._queue.put_nowait((seq, frame))
        except queue.Full:
            with self._lock:
                self._drops.add(seq)
        with self._lock:
            self._cursor = seq

    def _record_drops(self, *, final: bool = False) -> None:
        with self._lock:
            if self._drops.pending == 0 or (self._queue.full() and not final):
                return
            detail = self._drops.take()
        log.warning(
            "audit forward: %d records not forwarded (seq %d to %d); recorded as"
            " audit.forward-drop, fill the gap from dicom-vault audit export",
            detail["dropped"],
            detail["first"],
            detail["last"],
        )
        record = AuditRecord("system", "audit.forward-drop", outcome="dropped", detail=detail)
        self._vault.audit.record(record)

    def _tail(self) -> None:
        while not self._tail_stop.is_set():
            if self.poll() < BATCH:
                self._tail_stop.wait(self._settings.poll_seconds)

    def _deliver(self, frame: bytes) -> OSError | None:
        """None once sent, else why not (the connection is closed then)."""
        try:
            self._sender.send(frame)
        except OSError as exc:
            with self._lock:
                self._failures += 1
            return exc
        with self._lock:
            self._sent += 1
        return None

    def _sender_loop(self) -> None:
        backoff = 0.5
        failed = 0  # attempts that failed since the collector last took a record
        while not self._send_stop.is_set():
            try:
                seq, frame = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            while (error := self._deliver(frame)) is not None:
                if failed == 0:
                    self._log_unreachable(error)
                failed += 1
                if self._send_stop.wait(backoff):
                    with self._lock:
                        self._drops.add(seq)
                    self._queue.task_done()
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if failed:
                log.info(
                    "audit forward: collector %s:%d takes records again (after %d failed attempts)",
                    self._settings.host,
                    self._settings.port,
                    failed,
                )
                failed = 0
            self._queue.task_done()
            backoff = 0.5

    def _log_unreachable(self, error: OSError) -> None:
        """One warning per outage: the operator learns that records are held back."""
        log.warning(
            "audit forward: collector %s:%d unreachable (%s); retrying every %.0f s at most,"
            " records wait in the queue (%d) and past it are dropped and recorded",
            self._settings.host,
            self._settings.port,
            type(error).__name__,
            MAX_BACKOFF_SECONDS,
            self._settings.queue_size,
        )

    def start(self) -> None:
        """Start the tail and sender threads (daemon threads)."""
        log.info(
            "audit forward: records after %d to %s:%d",
            self._cursor,
            self._settings.host,
            self._settings.port,
        )
        for target, name in ((self._tail, "audit-tail"), (self._sender_loop, "audit-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> ForwardStats:
        """Stop following, give the sender ``timeout`` seconds to empty the queue,
        then stop it; what is still undelivered is counted and recorded as dropped."""
        self._tail_stop.set()
        for thread in self._threads[:1]:
            thread.join()
        deadline = time.monotonic() + timeout
        while self._threads and self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        self._send_stop.set()
        for thread in self._threads[1:]:
            thread.join()
        self._threads.clear()
        self._drain_undelivered()
        self._record_drops(final=True)
        self._sender.close()
        return self.stats

    def _drain_undelivered(self) -> None:
        while True:
            try:
                seq, _frame = self._queue.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._drops.add(seq)
            self._queue.task_done()
