"""Waiting for the signal to stop (SIGTERM or SIGINT), safely.

Long-running commands (``dicom-vault scp``, its receiver processes,
``dicom-vault audit forward``) block their main thread until told to stop,
then shut down in order. :class:`StopSignal` is how they wait.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal


class StopSignal:
    """Whether SIGTERM or SIGINT has arrived; make it in the main thread.

    The handler only writes a byte to a pipe, so any number of signals, at
    any moment, are safe. A handler that sets a :class:`threading.Event`
    is not: a second signal arriving inside the first handler's
    ``Event.set`` waits forever for the lock that same thread holds.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, b"\0")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a signal has arrived (or ``timeout`` s); whether one has."""
        readable, _, _ = select.select([self._read], [], [], timeout)
        return bool(readable)
