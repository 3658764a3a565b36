"""Waiting for SIGTERM or SIGINT (vault.signals.StopSignal)."""

from __future__ import annotations

import subprocess
import sys

_SIGNAL_STORM = """
import os, subprocess, sys
from vault.signals import StopSignal
stopping = StopSignal()
before = stopping.wait(timeout=0)
storm = f"for i in $(seq 1 300); do kill -TERM {os.getpid()} || exit 0; done"
sender = subprocess.Popen(["bash", "-c", storm], stderr=subprocess.DEVNULL)
print(before, stopping.wait(timeout=30), flush=True)
sender.wait()
"""


class TestStopSignal:
    def test_a_storm_of_stop_signals_ends_the_wait_without_deadlocking(self) -> None:
        # Handlers that set a threading.Event deadlocked here every time: a
        # signal arriving inside the handler's own Event.set waits forever
        # for the lock that same thread holds (seen as a receiver process
        # outliving its command).
        run = [sys.executable, "-c", _SIGNAL_STORM]
        done = subprocess.run(run, capture_output=True, text=True, timeout=60, check=True)
        assert done.stdout.split() == ["False", "True"]
