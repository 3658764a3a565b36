"""Several receiver processes on one listening socket (private).

:class:`ReceiverProcesses` is what ``dicom-vault scp`` runs when
``scp.processes`` > 1. This process binds the port and hands the listening
socket to ``processes`` spawned children, each a
:class:`~dicom_ingest.scp.StorageScp` that accepts only while no live
sibling holds fewer open associations
(:class:`~dicom_ingest._scp_transport.AcceptBalance`). It then:

- waits until every child says it serves, and fails if one exits first
  (a receiver that cannot start must not leave a port that nobody serves);
- watches the children and starts a new one in the slot of any that dies,
  so that a crash costs that process's open associations, not capacity;
- stops them all on SIGTERM or SIGINT.

The parent keeps its copy of the listening socket for those restarts; it
never accepts on it.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, MutableSequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from socket import socket

from dicom_ingest._scp_transport import AcceptBalance, shared_listener
from vault.settings import Settings

log = logging.getLogger("dicom_ingest.scp")

READY_TIMEOUT_SECONDS = 120.0
WATCH_SECONDS = 1.0


def serve_child(
    settings: Settings,
    listener: socket,
    counts: MutableSequence[int],
    beats: MutableSequence[float],
    slot: int,
    ready: Queue[int],
) -> None:
    """The body of one child: a receiver on the shared socket until SIGTERM."""
    from dicom_ingest.scp import StorageScp
    from vault.core import open_vault

    vault = open_vault(settings)
    balance = AcceptBalance(counts, beats, slot)
    scp = StorageScp(vault, settings.scp, listener=listener, balance=balance, settle=False)
    scp.start()
    ready.put(slot)
    try:
        stop_event().wait()
    finally:
        scp.stop()
        vault.close()


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread)."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    return stopping


class ReceiverProcesses:
    """Starts, watches and stops the receiver children (see module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._spawn = multiprocessing.get_context("spawn")
        self.count = settings.scp.processes
        self._counts = self._spawn.Array("i", self.count, lock=False)
        self._beats = self._spawn.Array("d", self.count, lock=False)
        self._ready: Queue[int] = self._spawn.Queue()
        self._listener = shared_listener(settings.scp.bind, settings.scp.port)
        self.children: list[BaseProcess] = []

    def start(self, stopping: threading.Event) -> None:
        """Start every child and wait until all serve (or ``stopping`` is set).

        Raises:
            RuntimeError: a child exited, or they did not all start in time.
        """
        self.children = [self._start_child(slot) for slot in range(self.count)]
        self._await_ready(self.count, stopping)

    def watch(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set, replace any child that has died."""
        while not stopping.wait(WATCH_SECONDS):
            for slot, child in enumerate(self.children):
                if child.exitcode is not None and not stopping.is_set():
                    log.warning(
                        "receiver process %d exited (%s); starting another", slot, child.exitcode
                    )
                    self.children[slot] = self._start_child(slot)

    def stop(self) -> None:
        """Stop every child and close the listening socket."""
        for child in self.children:
            child.terminate()
        for child in self.children:
            child.join()
        self._listener.close()

    def _start_child(self, slot: int) -> BaseProcess:
        args = (self._settings, self._listener, self._counts, self._beats, slot, self._ready)
        child = self._spawn.Process(target=serve_child, args=args, name=f"dicom-vault-scp-{slot}")
        child.start()
        return child

    def _await_ready(self, waiting: int, stopping: threading.Event) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while waiting and not stopping.is_set():
            if any(child.exitcode is not None for child in self.children):
                raise RuntimeError("a receiver process exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("the receiver processes did not all start in time")
            try:
                self._ready.get(timeout=0.2)
            except queue.Empty:
                continue
            waiting -= 1


def run_processes(
    settings: Settings, settler: threading.Thread, on_ready: Callable[[int], None] | None
) -> None:
    """Run the children and ``settler`` (the idle-study timer) until SIGTERM or SIGINT."""
    stopping = stop_event()
    processes = ReceiverProcesses(settings)
    try:
        processes.start(stopping)
        if stopping.is_set():
            return
        if on_ready is not None:
            on_ready(processes.count)
        settler.start()
        processes.watch(stopping)
    finally:
        processes.stop()
