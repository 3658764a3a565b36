"""Event-driven association threads for the C-STORE receiver (private).

pynetdicom 3.0 runs two polling loops per association: the upper-layer (DUL)
thread sleeps 1 ms whenever it finds nothing to do, and the association
thread sleeps 1 ms before every look at its queues. Each C-STORE crosses
both loops several times (request in, handler, response out), so on loopback
the polling alone costs a few milliseconds per instance: a pynetdicom SCP
that stores nothing tops out near 200 instances/s against dcmtk's storescu
(see ``benchmarks/cstore.py --pynetdicom-ceiling``).

This module keeps pynetdicom's state machine, PDU codecs and handlers and
only replaces the waiting:

- :class:`WakingDUL` blocks in ``select`` on the peer socket and an
  ``eventfd`` that is signalled whenever a primitive or event is queued for
  it, so it wakes as soon as there is work, and no sooner;
- :class:`WakingAssociation` blocks on an event set whenever a DIMSE message
  or an upper-layer primitive is queued for it (or its reactor is asked to
  pause), instead of sleeping 1 ms per turn;
- :class:`FastAssociationSocket` reads a PDU with ``recv_into`` instead of
  4 KiB reads, into a buffer that grows with the bytes that actually arrive
  (never reserved at the length a peer announces), and refuses a PDU longer
  than :data:`ASSOCIATION_PDU_LIMIT` before the association is established,
  or than the maximum length the receiver announced after it.

Timers (ARTIM, network idle) are still checked at least every
:data:`TIMER_CHECK_SECONDS`. It relies on pynetdicom 3.0 internals, hence the
version pin in ``pyproject.toml``; :data:`SUPPORTED` says whether the
installed version is the one this was written against, and
:class:`VaultRequestHandler` falls back to pynetdicom's own classes if not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import ssl
import threading
import weakref
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

log = logging.getLogger("dicom_ingest.scp")

SUPPORTED = pynetdicom.__version__.startswith("3.0.")
TIMER_CHECK_SECONDS = 0.05
# An A-ASSOCIATE-RQ with a hundred presentation contexts is about 20 KB; one
# with a user identity token, a few more. A peer not yet admitted sends no more.
ASSOCIATION_PDU_LIMIT = 1 << 20
# The first read of a PDU reserves at most this much; the buffer then doubles.
FIRST_READ_BYTES = 1 << 20
# Slack over the announced maximum length, for peers that count the PDV header in it.
PDU_LENGTH_SLACK = 64


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls ``wake`` after every ``put``."""

    def __init__(self, wake: Callable[[], None]) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _WakingCheckpoint(threading.Event):
    """The association's pause checkpoint: clearing it wakes the reactor so
    that it reaches the pause point at once."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake_reactor = wake

    def clear(self) -> None:
        super().clear()
        self._wake_reactor.set()


class FastAssociationSocket(AssociationSocket):
    """Reads whole PDUs with ``recv_into``, within the receiver's limits.

    A read that is refused, or cut short by the peer, returns fewer bytes than
    asked for, which pynetdicom's upper layer treats as the connection closed.
    """

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        if sock is None:
            return bytearray()
        limit = self._pdu_limit()
        if limit and nr_bytes > limit + PDU_LENGTH_SLACK:
            log.warning(
                "a PDU of %d bytes is over the limit of %d: connection closed", nr_bytes, limit
            )
            return bytearray()
        return _read_growing(sock, nr_bytes)

    def _pdu_limit(self) -> int:
        """The longest PDU this association may send now (0: no limit)."""
        assoc = self._assoc
        if not assoc.is_established:
            return ASSOCIATION_PDU_LIMIT
        return int(assoc.acceptor.maximum_length or 0)


def _read_growing(sock: Any, nr_bytes: int) -> bytearray:
    """``nr_bytes`` from ``sock`` (fewer if it closes), in a buffer that grows as they come."""
    buffer = bytearray(min(nr_bytes, FIRST_READ_BYTES))
    read = 0
    while read < nr_bytes:
        if read == len(buffer):
            buffer.extend(bytes(min(len(buffer), nr_bytes - read)))
        with memoryview(buffer) as view:
            count = sock.recv_into(view[read:], len(buffer) - read)
        if not count:
            del buffer[read:]
            return buffer
        read += count
    return buffer


class WakingDUL(DULServiceProvider):
    """pynetdicom's upper layer, waiting in ``select`` instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._close_wake_fd = weakref.finalize(self, os.close, self._wake_fd)  # exactly once
        self._wake_lock = threading.Lock()
        self.event_queue = _WakingQueue(self.wake)
        self.to_provider_queue = _WakingQueue(self.wake)

    def wake(self) -> None:
        """Interrupt the reactor's wait (safe from any thread)."""
        with self._wake_lock:
            if self._wake_fd >= 0:
                os.eventfd_write(self._wake_fd, 1)

    def _wait(self) -> None:
        """Block until the socket is readable, someone woke us, or a timer is due."""
        transport = self.socket
        sock = transport.socket if transport is not None and transport._is_connected else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return
        watched: list[Any] = [self._wake_fd]
        if sock is not None and sock.fileno() >= 0:
            watched.append(sock)
        try:
            select.select(watched, [], [], TIMER_CHECK_SECONDS)
        except (OSError, ValueError):  # the socket closed under us: re-check at once
            return
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake_fd)

    def stop_dul(self) -> bool:
        self.wake()
        return bool(super().stop_dul())

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def run_reactor(self) -> None:
        try:
            self._run()
        finally:
            with self._wake_lock:
                self._wake_fd = -1
                self._close_wake_fd()
            self.assoc._wake.set()  # type: ignore[attr-defined]

    def _run(self) -> None:
        """pynetdicom's DUL loop, with ``_wait`` where it slept 1 ms."""
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            if not self._step():
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _step(self) -> bool:
        """Send one queued primitive or read one PDU; ``False`` ends the reactor."""
        try:
            if self._process_recv_primitive():
                pass
            elif self._is_transport_event():
                self._idle_timer.restart()
        except Exception as exc:  # noqa: BLE001 (pynetdicom's own recovery: abort)
            log.error("association upper layer failed: %s", type(exc).__name__)
            abort_pdu = A_ABORT_RQ()
            abort_pdu.source = 0x02
            abort_pdu.reason_diagnostic = 0x00
            if self.socket is not None:
                self.socket.send(abort_pdu.encode())
            self.assoc.is_aborted = True
            self.assoc.is_established = False
            self.assoc._kill = True
            self._kill_thread = True
            return False
        return True


class WakingAssociation(Association):
    """An acceptor association whose reactor waits on events, not 1 ms sleeps."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._wake = threading.Event()
        self.dul = WakingDUL(self)
        self.dul._idle_timer.timeout = self.network_timeout
        self.dul.to_user_queue = _WakingQueue(self._wake.set)
        self.dimse.msg_queue = _WakingQueue(self._wake.set)
        self._reactor_checkpoint = _WakingCheckpoint(self._wake)
        self._reactor_checkpoint.set()

    def kill(self) -> None:
        self._wake.set()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, waiting for a message instead of polling."""
        self._is_paused = False
        busy = False
        while not self._kill:
            if not busy:
                self._wake.wait(TIMER_CHECK_SECONDS)
            self._wake.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            busy = msg is not None
            if msg:
                self._serve_request(msg, int(context_id))  # type: ignore[arg-type]
            if self._finished():
                return

    def _finished(self) -> bool:
        """Handle a release, an abort, a dead upper layer or the idle timeout."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            log.info("association network timeout reached")
            self.abort()
            self.kill()
            return True
        return False


class VaultRequestHandler(RequestHandler):
    """pynetdicom's request handler, building a :class:`WakingAssociation`
    with a :class:`FastAssociationSocket` (pynetdicom's own classes when the
    installed pynetdicom is not the version this module was written for)."""

    def _create_association(self) -> Association:
        if not SUPPORTED:
            return super()._create_association()
        assoc = WakingAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(FastAssociationSocket(assoc, client_socket=self.request))
        self._configure(assoc)
        return assoc

    def _configure(self, assoc: Association) -> None:
        """What pynetdicom's ``RequestHandler._create_association`` sets after
        the socket: acceptor and requestor details, contexts, event handlers."""
        ae, server = self.ae, self.server
        assoc.acceptor.maximum_length = ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
