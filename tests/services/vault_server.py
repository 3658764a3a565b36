"""``dicom-vault serve`` as a child process, for tests and benchmarks.

:func:`clinician_session` prepares a clinician, a case and a logged-in
session on a fresh vault before its server starts; :func:`wait_until_healthy`
waits for the server to answer ``/healthz``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from vault.admin import create_case, create_user, get_or_create_organisation
from vault.auth.login import Authenticator
from vault.auth.sessions import cookie_name
from vault.core import open_vault
from vault.settings import AuthSettings, Settings


def clinician_session(root: Path, organisation: str, reference: str) -> tuple[str, str, str]:
    """A clinician of ``organisation``, its case ``reference`` and a logged-in
    session on the vault at ``root``: (cookie name, cookie, case id)."""
    settings = Settings(data_dir=root, auth=AuthSettings(cookie_secure=False))
    vault = open_vault(settings)
    try:
        with vault.catalog.session() as session:
            org = get_or_create_organisation(session, organisation)
            user = create_user(session, f"clinician@{reference.lower()}.example", "clinician", org)
            case = create_case(session, reference, org)
            cookie = Authenticator(vault).sessions.start(session, user.id, "full", "test")
            return cookie_name(settings.auth), cookie, case.id
    finally:
        vault.close()


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll ``base``/healthz until it answers 200 (start-up readiness, not timing).

    Raises:
        RuntimeError: the server exited, or did not answer within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the vault server exited during start-up")
        try:
            if httpx.get(f"{base}/healthz", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the vault server never answered")
