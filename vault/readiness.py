"""Readiness: whether this process can take and serve studies right now.

``/healthz`` says the process answers; a load balancer or an orchestrator
also needs to know whether a request sent here could succeed. Three checks,
each against the real dependency, run side by side with one deadline:

- ``catalog``: a read of the schema's version row (an empty or foreign
  database fails, not only an unreachable one);
- ``store``: a look-up in the object store (a HEAD on S3) and a writer
  opened and aborted (a read-only or vanished filesystem fails);
- ``keys``: the key provider names its current key-encryption key (the HSM
  session opens, Transit answers, the key file is there).

The answer names each check ``ok`` or ``unavailable``; why a check failed
goes to the operational log by the error's type only, never to the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from crypto.errors import CryptoError
from vault.core import Vault
from vault.errors import VaultError

log = logging.getLogger("vault.readiness")

OK, UNAVAILABLE = "ok", "unavailable"
PROBE_KEY = "readiness/probe"  # never written: only looked up
_FAILURES = (SQLAlchemyError, VaultError, CryptoError, OSError, ValueError)


def _catalog(vault: Vault) -> None:
    with vault.catalog.engine.connect() as connection:
        connection.execute(text("SELECT version_num FROM alembic_version")).first()


def _store(vault: Vault) -> None:
    vault.store.exists(PROBE_KEY)
    writer = vault.store.open_writer()
    writer.abort()


def _keys(vault: Vault) -> None:
    vault.keyring.provider.current_kek_id()


CHECKS: dict[str, Callable[[Vault], None]] = {"catalog": _catalog, "store": _store, "keys": _keys}


def _run(name: str, check: Callable[[Vault], None], vault: Vault) -> str:
    try:
        check(vault)
    except _FAILURES as exc:
        log.warning("readiness: %s unavailable: %s", name, type(exc).__name__)
        return UNAVAILABLE
    return OK


class ReadinessProbe:
    """Runs the checks for one vault, each in a daemon thread of its own.

    A check still running from an earlier probe (a dependency that hangs) is
    not started again, and counts as unavailable until it returns: probes
    every few seconds never pile up threads, nor hold up the process's exit.
    """

    def __init__(self, vault: Vault, *, timeout: float = 5.0) -> None:
        self._vault = vault
        self._timeout = timeout
        self._running: dict[str, Future[str]] = {}
        self._lock = threading.Lock()

    def check(self) -> dict[str, str]:
        """Each check's outcome; one still running after the deadline is unavailable."""
        with self._lock:
            for name, check in CHECKS.items():
                running = self._running.get(name)
                if running is None or running.done():
                    self._running[name] = self._start(name, check)
            futures = dict(self._running)
        wait(futures.values(), timeout=self._timeout)
        outcomes = {}
        for name, future in futures.items():
            if not future.done():
                log.warning("readiness: %s unavailable: no answer in %.0f s", name, self._timeout)
            outcomes[name] = future.result() if future.done() else UNAVAILABLE
        return outcomes

    def _start(self, name: str, check: Callable[[Vault], None]) -> Future[str]:
        future: Future[str] = Future()

        def run() -> None:
            future.set_result(_run(name, check, self._vault))

        thread = threading.Thread(target=run, name=f"dicom-vault-ready-{name}", daemon=True)
        thread.start()
        return future
