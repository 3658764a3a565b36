"""A ``dicom-vault worker`` process for tests and benchmarks that need a real one."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

CLI = Path(sys.executable).with_name("dicom-vault")


@contextmanager
def worker_process(
    env: dict[str, str],
    *extra: str,
    stderr: int | IO[bytes] | None = None,
    loglevel: str = "WARNING",
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``dicom-vault worker`` (and ``extra`` options) with ``env``, run in ``cwd``,
    stopped (SIGTERM, then kill) afterwards."""
    process = subprocess.Popen(
        [str(CLI), "worker", "--concurrency", "1", "--loglevel", loglevel, *extra],
        env=env,
        cwd=cwd,
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
