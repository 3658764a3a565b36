"""Several receiver processes on one listening socket (private).

:class:`ReceiverProcesses` is what ``dicom-vault scp`` runs when
``scp.processes`` > 1. This process binds the port and hands the listening
socket to ``processes`` spawned children, each a
:class:`~dicom_ingest.scp.StorageScp` that accepts only while no live
sibling holds fewer open associations
(:class:`~dicom_ingest._scp_transport.AcceptBalance`). It then:

- waits until every child says it serves, and fails if one exits first
  (a receiver that cannot start must not leave a port that nobody serves);
- watches the children and starts a new one in the slot of any that dies
  (exits other than cleanly), so that a crash costs that process's open
  associations, not capacity;
- stops them all on SIGTERM or SIGINT.

The parent keeps its copy of the listening socket for those restarts; it
never accepts on it. :class:`ReceiverGroup` bundles the children with the
idle-study timer for ``dicom-vault scp`` (:func:`run_processes`) and for
``dicom-vault serve``, which runs them beside the web API.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, MutableSequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from socket import socket

from dicom_ingest._scp_transport import (
    AcceptBalance,
    binding,
    checked_tls_context,
    shared_listener,
)
from vault.errors import ReceiverNotStarted
from vault.logs import configure_logging
from vault.settings import Settings
from vault.settle import IdleSettler
from vault.signals import StopSignal

log = logging.getLogger("dicom_ingest.scp")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
READY_TIMEOUT_SECONDS = 120.0
WATCH_SECONDS = 1.0
STABLE_SECONDS = 30.0
STOP_GRACE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 60.0


def serve_child(
    settings: Settings,
    listener: socket,
    counts: MutableSequence[int],
    beats: MutableSequence[float],
    slot: int,
    ready: Queue[int],
    parent: int,
) -> None:
    """The body of one child: a receiver on the shared socket until SIGTERM."""
    from dicom_ingest.scp import StorageScp
    from vault.core import open_vault

    die_with_parent(parent)
    configure_logging(settings.log_level)
    stopping = StopSignal()
    vault = open_vault(settings)
    balance = AcceptBalance(counts, beats, slot)
    scp = StorageScp(vault, settings.scp, listener=listener, balance=balance, settle=False)
    scp.start()
    ready.put(slot)
    try:
        stopping.wait()
    finally:
        bound_the_stop()
        scp.stop()
        vault.close()


def bound_the_stop(seconds: float = STOP_GRACE_SECONDS) -> None:
    """Should this process not have ended ``seconds`` from now, print every
    thread's stack to stderr and exit with status 1.

    A receiver that hangs while stopping (an association that will not
    close, a storage call that never returns) must not outlive the command
    that runs it and keep the port's shared socket open; the stacks say why.
    """
    faulthandler.dump_traceback_later(seconds, exit=True)


def die_with_parent(parent: int) -> None:
    """Have Linux send this process SIGTERM when ``parent`` ends, however it
    ends (uvicorn re-raises SIGTERM after its shutdown, which skips the
    parent's ``finally``; SIGKILL skips everything). Exits at once if the
    parent is already gone. Linux ties this to the parent *thread* that
    started the child: the watch thread, for replacements, lives until stop.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


class RestartBackoff:
    """How long to wait before starting a dead child again, slot by slot.

    One second after a death; twice the last wait after each death within
    :data:`STABLE_SECONDS` of the child's start, up to
    :data:`MAX_BACKOFF_SECONDS`; one second again once a child has lived
    longer than that.
    """

    def __init__(self, count: int) -> None:
        self._failures = [0] * count

    def delay(self, slot: int, *, lived: float) -> float:
        """Seconds to wait before restarting ``slot``, whose child lived ``lived`` s."""
        quick = lived < STABLE_SECONDS
        self._failures[slot] = self._failures[slot] + 1 if quick else 1
        return min(2.0 ** (self._failures[slot] - 1), MAX_BACKOFF_SECONDS)


class ReceiverProcesses:
    """Starts, watches and stops the receiver children (see module docstring)."""

    def __init__(self, settings: Settings) -> None:
        """Bind the shared socket (the children start in :meth:`start`).

        Raises:
            ReceiverNotStarted: the address cannot be bound, or the TLS
                settings the children would use are wrong.
        """
        self._settings = settings
        self._spawn = multiprocessing.get_context("spawn")
        self.count = settings.scp.processes
        self._counts = self._spawn.Array("i", self.count, lock=False)
        self._beats = self._spawn.Array("d", self.count, lock=False)
        self._ready: Queue[int] = self._spawn.Queue()
        checked_tls_context(settings.scp)  # each child makes its own; fail here, once
        with binding(settings.scp):
            self._listener = shared_listener(settings.scp.bind, settings.scp.port)
        self.children: list[BaseProcess] = []
        self._started = [0.0] * self.count

    def start(self, stopping: threading.Event) -> None:
        """Start every child and wait until all serve (or ``stopping`` is set).

        Raises:
            ReceiverNotStarted: a child exited, or they did not all start in time.
        """
        self.children = [self._start_child(slot) for slot in range(self.count)]
        self._await_ready(stopping)

    def watch(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set, replace any child that has died.

        A child that exited with status 0 was told to stop (SIGTERM or the
        terminal's SIGINT, on its way to everyone's shutdown): it is left.
        Restarts wait as :class:`RestartBackoff` says, so that a receiver
        that cannot run does not spend a core on restarting.
        """
        backoff = RestartBackoff(self.count)
        due = [0.0] * self.count
        while not stopping.wait(WATCH_SECONDS):
            self._drain_ready()
            for slot, child in enumerate(self.children):
                if child.exitcode in (None, 0) or stopping.is_set():
                    continue
                now = time.monotonic()
                if not due[slot]:
                    delay = backoff.delay(slot, lived=now - self._started[slot])
                    due[slot] = now + delay
                    log.warning(
                        "receiver process %d died (%s); starting another in %.0f s",
                        slot,
                        child.exitcode,
                        delay,
                    )
                if now >= due[slot]:
                    due[slot] = 0.0
                    self.children[slot] = self._start_child(slot)

    def _drain_ready(self) -> None:
        """Drop the ready messages of replacements (nobody waits for them)."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._ready.get_nowait()

    def stop(self) -> None:
        """Stop every child and close the listening socket.

        A child gets :data:`STOP_GRACE_SECONDS` (and ends itself after that,
        see :func:`bound_the_stop`); one still there a few seconds later is
        killed.
        """
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 5.0
        for slot, child in enumerate(self.children):
            child.join(max(deadline - time.monotonic(), 0.0))
            if child.exitcode is None:
                log.warning("receiver process %d did not stop; killing it", slot)
                child.kill()
                child.join()
        self._listener.close()

    def _start_child(self, slot: int) -> BaseProcess:
        args = (
            self._settings,
            self._listener,
            self._counts,
            self._beats,
            slot,
            self._ready,
            os.getpid(),
        )
        child = self._spawn.Process(target=serve_child, args=args, name=f"dicom-vault-scp-{slot}")
        child.start()
        self._started[slot] = time.monotonic()
        return child

    def _await_ready(self, stopping: threading.Event) -> None:
        waiting = self.count
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while waiting and not stopping.is_set():
            if any(child.exitcode is not None for child in self.children):
                raise ReceiverNotStarted("a receiver process exited during start-up")
            if time.monotonic() > deadline:
                raise ReceiverNotStarted("the receiver processes did not all start in time")
            try:
                self._ready.get(timeout=0.2)
            except queue.Empty:
                continue
            waiting -= 1


class ReceiverGroup:
    """The children and the idle-study timer, for ``scp`` and ``serve`` alike.

    :meth:`start` returns once every child serves; the children are then
    watched from a background thread until :meth:`stop`.
    """

    def __init__(self, settings: Settings, settler: IdleSettler) -> None:
        self.processes = ReceiverProcesses(settings)
        self._settler = settler
        self._stopping = threading.Event()
        self._watcher = threading.Thread(
            target=self.processes.watch, args=(self._stopping,), name="scp-watch", daemon=True
        )

    def start(self) -> None:
        """Start the children, wait until all serve, then the timer and the watch.

        Raises:
            ReceiverNotStarted: a child exited, or they did not all start in time
                (the children are stopped again).
        """
        try:
            self.processes.start(self._stopping)
        except BaseException:
            self.processes.stop()
            raise
        self._settler.start()
        self._watcher.start()

    def stop(self) -> None:
        """Stop the watch, the timer and every child."""
        self._stopping.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self._settler.stop()
        self.processes.stop()


def run_processes(
    settings: Settings, settler: IdleSettler, on_ready: Callable[[int], None] | None
) -> None:
    """Run the children and ``settler`` until SIGTERM or SIGINT (``dicom-vault scp``)."""
    stopping = StopSignal()
    group = ReceiverGroup(settings, settler)
    group.start()
    try:
        if on_ready is not None:
            on_ready(group.processes.count)
        stopping.wait()
    finally:
        group.stop()
