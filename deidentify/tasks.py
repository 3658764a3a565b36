"""The Celery app and the ``deidentify_study`` task that makes pseudonymised copies.

:func:`create_celery_app` builds a :class:`VaultCelery` from
``Settings.celery``. With no ``broker_url`` (the embedded default) it runs
tasks eagerly in the calling process, so a settled study is de-identified
before ``settle`` returns and no server is needed; with a Redis or RabbitMQ
URL, ``dicom-vault worker`` processes consume the queue.

Task messages carry one internal study id and nothing else: no key, no UID,
no name. The task acknowledges late (a worker that dies mid-study leaves the
message for another, which resumes the study), retries transient errors
(store, catalog or key provider unreachable) with exponential back-off, and
records every other failure on the study's copy as a PHI-free reason code.

:class:`DeidentifyOnSettle` is the listener study settling calls
(:func:`register_deidentification` adds it to a
:class:`~vault.settle.StudySettledHooks`): it marks the study ``queued`` and
sends the task.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.result import AsyncResult

from crypto.errors import CryptoError
from deidentify.pipeline import (
    TRANSIENT_ERRORS,
    StudyDeidentifier,
    mark_failed,
    mark_retrying,
    queue_study,
)
from vault.core import Vault, open_vault
from vault.errors import NotFound, VaultError
from vault.retention_jobs import register_retention_jobs
from vault.settings import CelerySettings, Settings
from vault.settle import StudySettledHooks

TASK_NAME: Final = "dicom_vault.deidentify_study"
SOFT_LIMIT_MARGIN: Final = 0.9

log = logging.getLogger(__name__)


class VaultCelery(Celery):
    """A Celery app bound to one deployment's settings and, lazily, its vault.

    Each process opens its vault on first use (after a prefork worker has
    forked), unless one was handed in (embedded mode, tests).
    """

    def __init__(self, settings: Settings, *, vault: Vault | None = None) -> None:
        super().__init__("dicom_vault", set_as_current=False)
        self.vault_settings = settings
        self._vault = vault
        self._owns_vault = vault is None

    @property
    def vault(self) -> Vault:
        if self._vault is None:
            self._vault = open_vault(self.vault_settings)
        return self._vault

    @property
    def deidentify_study(self) -> Task:
        """The registered ``deidentify_study`` task of this app."""
        return self.tasks[TASK_NAME]

    def close_vault(self) -> None:
        """Dispose of a vault this app opened itself."""
        if self._owns_vault and self._vault is not None:
            self._vault.close()
            self._vault = None


def celery_config(settings: CelerySettings) -> dict[str, Any]:
    """The Celery configuration for ``settings`` (eager when there is no broker)."""
    eager = settings.broker_url is None
    limit = settings.task_time_limit_seconds
    return {
        "broker_url": settings.broker_url or "memory://",
        "result_backend": settings.result_backend,
        "task_always_eager": eager,
        "task_eager_propagates": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_extended": False,
        "task_time_limit": limit,
        "task_soft_time_limit": max(1, int(limit * SOFT_LIMIT_MARGIN)),
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_concurrency": settings.worker_concurrency,
    }


def create_celery_app(settings: Settings, *, vault: Vault | None = None) -> VaultCelery:
    """The Celery app of ``settings`` with ``deidentify_study`` registered.

    Parameters
    ----------
    settings:
        The deployment's settings (``settings.celery`` configures Celery).
    vault:
        The vault tasks use; opened from ``settings`` on first use if ``None``.
    """
    app = VaultCelery(settings, vault=vault)
    app.conf.update(celery_config(settings.celery))
    app.task(
        bind=True,
        name=TASK_NAME,
        acks_late=True,
        max_retries=settings.celery.max_retries,
    )(deidentify_study)
    register_retention_jobs(app, hour_utc=settings.retention.daily_run_hour_utc)
    return app


def backoff_seconds(retries: int, settings: CelerySettings) -> float:
    """Seconds before retry number ``retries + 1``: doubling, capped."""
    delay = settings.retry_backoff_seconds * (2**retries)
    return min(delay, settings.retry_backoff_max_seconds)


def deidentify_study(task: Task, study_id: str) -> dict[str, str | int] | None:
    """Make (or complete) the pseudonymised copy of original study ``study_id``.

    Returns the run's summary (internal ids and counts), or ``None`` when the
    study no longer exists.
    """
    app: VaultCelery = task.app  # type: ignore[assignment]
    vault, settings = app.vault, app.vault_settings.celery
    try:
        return StudyDeidentifier(vault).run(study_id).as_dict()
    except TRANSIENT_ERRORS as exc:
        if task.request.retries >= settings.max_retries:
            mark_failed(vault, study_id, exc.reason)
            raise
        mark_retrying(vault, study_id, exc.reason)
        countdown = backoff_seconds(task.request.retries, settings)
        raise task.retry(exc=exc, countdown=countdown) from exc
    except NotFound:
        log.warning("de-identification skipped: the study or one of its instances is gone")
        mark_failed(vault, study_id, NotFound.reason)
        return None
    except SoftTimeLimitExceeded:
        mark_failed(vault, study_id, "time-limit")
        raise
    except (VaultError, CryptoError) as exc:
        mark_failed(vault, study_id, exc.reason)
        raise
    except Exception:
        mark_failed(vault, study_id, "internal-error")
        raise


class DeidentifyOnSettle:
    """The study-settled listener: queue the study and send ``deidentify_study``.

    In embedded (eager) mode the copy is made before this returns.
    """

    def __init__(self, app: VaultCelery) -> None:
        self._app = app

    def __call__(self, study_id: str) -> None:
        self.on_study_settled(study_id)

    def on_study_settled(self, study_id: str) -> AsyncResult:
        """Mark ``study_id`` queued and send its task (the message holds the id only)."""
        queue_study(self._app.vault, study_id)
        return self._app.deidentify_study.delay(study_id)


def register_deidentification(hooks: StudySettledHooks, app: VaultCelery) -> DeidentifyOnSettle:
    """Have every study that settles from now on queued for de-identification on ``app``."""
    listener = DeidentifyOnSettle(app)
    hooks.register(listener)
    return listener


def deidentification_hooks(settings: Settings) -> StudySettledHooks:
    """Hooks that hand every study settling in this process to de-identification.

    What ``dicom-vault serve`` and ``dicom-vault scp`` give their entry points:
    without a broker (the embedded default) the study is de-identified in
    this process as it settles; with one, a task is queued for the workers.
    """
    hooks = StudySettledHooks()
    register_deidentification(hooks, create_celery_app(settings))
    return hooks
