"""A ``dicom-vault worker`` process for tests and benchmarks that need a real one."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLI = Path(sys.executable).with_name("dicom-vault")


@contextmanager
def worker_process(
    env: dict[str, str], *, stderr: int | None = None, loglevel: str = "WARNING"
) -> Iterator[subprocess.Popen[bytes]]:
    """``dicom-vault worker`` with ``env``, stopped (SIGTERM, then kill) afterwards."""
    process = subprocess.Popen(
        [str(CLI), "worker", "--concurrency", "1", "--loglevel", loglevel],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
