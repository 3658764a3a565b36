"""The daily jobs of :mod:`vault.daily_jobs` as Celery tasks on Celery beat's schedule.

:func:`register_retention_jobs` adds the tasks to a vault's Celery app and
schedules all four once a day at ``retention.daily_run_hour_utc``:
``dicom_vault.expire_studies`` (crypto-shred expired studies, sweep browser
uploads abandoned half-way), ``dicom_vault.purge_audit`` (purge access-log
records past their 12 months, then write a signed checkpoint, and delete
expired browser sessions), ``dicom_vault.backup`` (a catalog backup when one
is due) and ``dicom_vault.rotate_backups`` (delete backups past their
6-month rotation, :func:`vault.backup.rotate_backups`, every day whatever
``retention.backup_every_days`` says). Their messages carry no argument.
Run beat beside a worker (``celery beat``, or a worker started with ``-B``);
without a broker, ``dicom-vault serve`` runs the same jobs itself
(:class:`vault.daily_jobs.DailyRunner`).
"""

from __future__ import annotations

from typing import Final, Protocol

from celery import Celery, Task
from celery.schedules import crontab

from vault.core import Vault
from vault.daily_jobs import backup_job, expire_job, purge_job, rotate_job

EXPIRE_TASK: Final = "dicom_vault.expire_studies"
PURGE_TASK: Final = "dicom_vault.purge_audit"
BACKUP_TASK: Final = "dicom_vault.backup"
BACKUP_ROTATION_TASK: Final = "dicom_vault.rotate_backups"


class _VaultApp(Protocol):
    @property
    def vault(self) -> Vault: ...


def _vault_of(task: Task) -> Vault:
    app: _VaultApp = task.app  # type: ignore[assignment]
    return app.vault


def expire_studies_task(task: Task) -> dict[str, int]:
    """Erase every expired, unheld study; the count (ids stay in the access log).

    Then sweep abandoned browser uploads (each recorded as ``upload.abandon``).
    """
    return {"expired": expire_job(_vault_of(task))}


def purge_audit_task(task: Task) -> dict[str, int]:
    """Purge access-log records past their retention; the count."""
    return {"purged": purge_job(_vault_of(task))}


def backup_task(task: Task) -> dict[str, int]:
    """Take a catalog backup if one is due (and rotate); 1 if taken."""
    return {"taken": backup_job(_vault_of(task))}


def rotate_backups_task(task: Task) -> dict[str, int]:
    """Delete catalog backups older than retention.backup_retention_days; the count."""
    return {"deleted": rotate_job(_vault_of(task))}


def register_retention_jobs(app: Celery, *, hour_utc: int) -> None:
    """Register the tasks on ``app`` and schedule each daily at ``hour_utc``:00 UTC."""
    app.task(bind=True, name=EXPIRE_TASK)(expire_studies_task)
    app.task(bind=True, name=PURGE_TASK)(purge_audit_task)
    app.task(bind=True, name=BACKUP_TASK)(backup_task)
    app.task(bind=True, name=BACKUP_ROTATION_TASK)(rotate_backups_task)
    daily = crontab(minute=0, hour=hour_utc)
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "expire-studies-daily": {"task": EXPIRE_TASK, "schedule": daily},
        "purge-audit-daily": {"task": PURGE_TASK, "schedule": daily},
        "backup-daily": {"task": BACKUP_TASK, "schedule": daily},
        "rotate-backups-daily": {"task": BACKUP_ROTATION_TASK, "schedule": daily},
    }
