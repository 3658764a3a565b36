"""The daily retention jobs as Celery tasks on Celery beat's schedule.

:func:`register_retention_jobs` adds two tasks to a vault's Celery app and
schedules both once a day at ``retention.daily_run_hour_utc``:
``dicom_vault.expire_studies`` (crypto-shred expired studies) and
``dicom_vault.purge_audit`` (purge access-log records past their 12 months,
then write a signed checkpoint). Their messages carry no argument at all.
The expiry job also sweeps browser uploads abandoned half-way, dropping the
encrypted parts they held (:func:`dicom_ingest.uploads.sweep_abandoned_uploads`).
A third, ``dicom_vault.rotate_backups``, deletes catalog backups past their
6-month rotation (:func:`vault.backup.rotate_backups`).
Run beat beside a worker (``celery beat``, or a worker started with ``-B``).
"""

from __future__ import annotations

from typing import Final, Protocol

from celery import Celery, Task
from celery.schedules import crontab

from vault.audit_retention import purge_audit
from vault.backup import rotate_backups
from vault.core import Vault
from vault.retention import expire_studies

EXPIRE_TASK: Final = "dicom_vault.expire_studies"
PURGE_TASK: Final = "dicom_vault.purge_audit"
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
    vault = _vault_of(task)
    expired = len(expire_studies(vault))
    sweep_uploads(vault)
    return {"expired": expired}


def sweep_uploads(vault: Vault) -> int:
    """Close browser uploads abandoned half-way and drop their held parts; how many."""
    from dicom_ingest.uploads import sweep_abandoned_uploads  # ingest builds on vault

    return sweep_abandoned_uploads(vault)


def purge_audit_task(task: Task) -> dict[str, int]:
    """Purge access-log records past their retention; the count."""
    return {"purged": purge_audit(_vault_of(task))}


def rotate_backups_task(task: Task) -> dict[str, int]:
    """Delete catalog backups older than retention.backup_retention_days; the count."""
    return {"deleted": len(rotate_backups(_vault_of(task)))}


def register_retention_jobs(app: Celery, *, hour_utc: int) -> None:
    """Register the tasks on ``app`` and schedule each daily at ``hour_utc``:00 UTC."""
    app.task(bind=True, name=EXPIRE_TASK)(expire_studies_task)
    app.task(bind=True, name=PURGE_TASK)(purge_audit_task)
    app.task(bind=True, name=BACKUP_ROTATION_TASK)(rotate_backups_task)
    daily = crontab(minute=0, hour=hour_utc)
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "expire-studies-daily": {"task": EXPIRE_TASK, "schedule": daily},
        "purge-audit-daily": {"task": PURGE_TASK, "schedule": daily},
        "rotate-backups-daily": {"task": BACKUP_ROTATION_TASK, "schedule": daily},
    }
