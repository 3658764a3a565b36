"""The daily retention jobs as Celery tasks on Celery beat's schedule.

:func:`register_retention_jobs` adds two tasks to a vault's Celery app and
schedules both once a day at ``retention.daily_run_hour_utc``:
``dicom_vault.expire_studies`` (crypto-shred expired studies) and
``dicom_vault.purge_audit`` (purge access-log records past their 12 months,
then write a signed checkpoint). Their messages carry no argument at all.
Run beat beside a worker (``celery beat``, or a worker started with ``-B``).
"""

from __future__ import annotations

from typing import Final, Protocol

from celery import Celery, Task
from celery.schedules import crontab

from vault.audit_retention import purge_audit
from vault.core import Vault
from vault.retention import expire_studies

EXPIRE_TASK: Final = "dicom_vault.expire_studies"
PURGE_TASK: Final = "dicom_vault.purge_audit"


class _VaultApp(Protocol):
    @property
    def vault(self) -> Vault: ...


def _vault_of(task: Task) -> Vault:
    app: _VaultApp = task.app  # type: ignore[assignment]
    return app.vault


def expire_studies_task(task: Task) -> dict[str, int]:
    """Erase every expired, unheld study; the count (ids stay in the access log)."""
    return {"expired": len(expire_studies(_vault_of(task)))}


def purge_audit_task(task: Task) -> dict[str, int]:
    """Purge access-log records past their retention; the count."""
    return {"purged": purge_audit(_vault_of(task))}


def register_retention_jobs(app: Celery, *, hour_utc: int) -> None:
    """Register both tasks on ``app`` and schedule them daily at ``hour_utc``:00 UTC."""
    app.task(bind=True, name=EXPIRE_TASK)(expire_studies_task)
    app.task(bind=True, name=PURGE_TASK)(purge_audit_task)
    daily = crontab(minute=0, hour=hour_utc)
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        "expire-studies-daily": {"task": EXPIRE_TASK, "schedule": daily},
        "purge-audit-daily": {"task": PURGE_TASK, "schedule": daily},
    }
