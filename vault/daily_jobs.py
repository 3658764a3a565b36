"""The daily jobs that keep the retention promises, and who runs them.

Four jobs, each a plain function of a vault:

- ``expire``: crypto-shred every study whose 5 years are up and no hold
  covers (:func:`vault.retention.expire_studies`), then close browser uploads
  abandoned half-way;
- ``purge``: delete access-log records past their 12 months
  (:func:`vault.audit_retention.purge_audit`, with its signed checkpoint),
  the login counters that hold nothing any more (each names a client
  address: :meth:`vault.auth.throttle.Throttle.forget_idle`), and browser
  sessions past their idle or absolute time-out whose cookie never came back
  (each keeps the staff member's address:
  :meth:`vault.auth.sessions.SessionStore.purge_expired`);
- ``backup``: take an encrypted catalog backup when the newest is
  ``retention.backup_every_days`` old (0: never; backups are then the
  operator's) (:func:`vault.backup.create_backup`);
- ``rotate``: delete backups past their 6-month rotation
  (:func:`vault.backup.rotate_backups`), every day whatever the backup
  cadence, so that a vault that stopped taking backups still lets go of
  its old ones.

:func:`run_daily_jobs` runs all four, each on its own: one that fails is
logged (by its name and the error's type only) and the others still run.
With a broker, Celery beat schedules them (:mod:`vault.retention_jobs`);
without one (the embedded default), ``dicom-vault serve`` runs a
:class:`DailyRunner` thread, so that the promises hold without a cron entry
an operator might forget.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from crypto.errors import CryptoError
from vault.audit_retention import purge_audit
from vault.auth.sessions import SessionStore
from vault.auth.throttle import Throttle
from vault.backup import create_backup, list_backups, rotate_backups
from vault.core import Vault
from vault.errors import VaultError
from vault.retention import expire_studies

log = logging.getLogger("vault.daily_jobs")

# A backup counts as a day old a little before 24 hours: a job that runs at
# 02:00:03 one day and 02:00:01 the next still takes one.
_EARLY = timedelta(hours=1)
_FAILURES = (SQLAlchemyError, VaultError, CryptoError, OSError)


def expire_job(vault: Vault) -> int:
    """Erase expired, unheld studies, then sweep abandoned uploads; studies erased."""
    from dicom_ingest.uploads import sweep_abandoned_uploads  # ingest builds on vault

    expired = len(expire_studies(vault))
    sweep_abandoned_uploads(vault)
    return expired


def purge_job(vault: Vault) -> int:
    """Purge the access log past its retention, idle login counters and expired
    sessions; access-log records deleted."""
    purged = purge_audit(vault)
    with vault.catalog.session() as session:
        Throttle(vault.settings.auth, vault.clock).forget_idle(session)
        SessionStore(vault.settings.auth, vault.clock).purge_expired(session)
    return purged


def backup_job(vault: Vault) -> int:
    """Take a catalog backup if one is due; 1 if taken, else 0."""
    every = vault.settings.retention.backup_every_days
    if every == 0:
        return 0
    now = vault.clock.now()
    newest = max((info.created_at for info in list_backups(vault)), default=None)
    if newest is not None and now - newest < timedelta(days=every) - _EARLY:
        return 0
    create_backup(vault)
    return 1


def rotate_job(vault: Vault) -> int:
    """Delete backups past their rotation (whatever the backup cadence); how many."""
    return len(rotate_backups(vault))


DAILY_JOBS: dict[str, Callable[[Vault], int]] = {
    "expire": expire_job,
    "purge": purge_job,
    "backup": backup_job,
    "rotate": rotate_job,
}


def run_daily_jobs(vault: Vault) -> dict[str, int | None]:
    """Run every daily job; each one's count, or None where it failed (and was logged)."""
    results: dict[str, int | None] = {}
    for name, job in DAILY_JOBS.items():
        try:
            results[name] = job(vault)
        except _FAILURES as exc:
            log.error("daily job %s failed, next run tomorrow: %s", name, type(exc).__name__)
            results[name] = None
    log.info("daily jobs done: %s", ", ".join(f"{k} {v}" for k, v in results.items()))
    return results


def next_run(now: datetime, hour_utc: int) -> datetime:
    """The first ``hour_utc``:00 UTC strictly after ``now``."""
    today = now.replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    return today if today > now else today + timedelta(days=1)


class DailyRunner(threading.Thread):
    """A daemon thread that runs :func:`run_daily_jobs` at ``hour_utc`` every day."""

    def __init__(self, vault: Vault, *, hour_utc: int, poll_seconds: float = 60.0) -> None:
        super().__init__(name="dicom-vault-daily-jobs", daemon=True)
        self._vault = vault
        self._hour = hour_utc
        self._poll = poll_seconds
        self._stopping = threading.Event()
        self.due = next_run(vault.clock.now(), hour_utc)

    def run(self) -> None:
        while not self._stopping.wait(self._poll):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 (the runner must outlive one bad day)
                log.error("daily jobs failed, next run tomorrow: %s", type(exc).__name__)

    def tick(self) -> dict[str, int | None] | None:
        """Run the jobs if their time has come (then set the next); their results."""
        now = self._vault.clock.now()
        if now < self.due:
            return None
        self.due = next_run(now, self._hour)
        return run_daily_jobs(self._vault)

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()
