"""Study completion: when a study stops receiving, it settles.

A study is *settled* when no instance arrived for a configured idle time, or
when a sender says it is complete (a storage commitment request, an uploader
finishing). Settling sets ``state = "settled"`` and ``settled_at`` once, and
tells every registered listener the study's internal id; study-level work
(de-identification, notifications) starts there rather than per image.

Listeners are registered on a :class:`StudySettledHooks` passed in by whoever
wires the service; nothing is global. A listener that raises does not stop
the others, and the study stays settled: listeners must be idempotent and do
their own retrying.

Example:
    >>> hooks = StudySettledHooks()
    >>> hooks.register(print)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from vault.catalog.models import Study
from vault.core import Vault
from vault.errors import NotFound
from vault.logs import withheld_traceback
from vault.settings import ScpSettings

SettleListener = Callable[[str], None]

SETTLED = "settled"
RECEIVING = "receiving"

log = logging.getLogger(__name__)


class StudySettledHooks:
    """The listeners told about each newly settled study."""

    def __init__(self, listeners: Iterable[SettleListener] = ()) -> None:
        self._listeners: list[SettleListener] = list(listeners)
        self._lock = threading.Lock()

    def register(self, listener: SettleListener) -> None:
        """Call ``listener(study_id)`` for every study that settles from now on."""
        with self._lock:
            self._listeners.append(listener)

    def notify(self, study_id: str) -> None:
        """Tell every listener; a failing one is logged (type only) and skipped."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(study_id)
            except Exception as exc:  # noqa: BLE001 (one listener must not silence the rest)
                # The types and the frames, not the message: it may quote data.
                log.error(
                    "settle listener %s failed on study %s\n%s",
                    getattr(listener, "__qualname__", type(listener).__name__),
                    study_id,
                    withheld_traceback(exc),
                )


def _mark_settled(vault: Vault, study_ids: Iterable[str]) -> list[str]:
    """Settle those of ``study_ids`` still receiving; return the ones this call settled."""
    settled: list[str] = []
    now = vault.clock.now()
    with vault.catalog.session() as session:
        for study_id in study_ids:
            result = session.execute(
                update(Study)
                .where(Study.id == study_id, Study.state == RECEIVING)
                .values(state=SETTLED, settled_at=now)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                settled.append(study_id)
    return settled


def settle_study(vault: Vault, study_id: str, hooks: StudySettledHooks | None = None) -> bool:
    """Settle one study now (a sender said it is complete).

    Returns:
        ``True`` if this call settled it, ``False`` if it was already settled
        (listeners are then not called again).

    Raises:
        NotFound: no such study.
    """
    with vault.catalog.session() as session:
        if session.get(Study, study_id) is None:
            raise NotFound("no such study")
    settled = _mark_settled(vault, [study_id])
    if settled and hooks is not None:
        hooks.notify(study_id)
    return bool(settled)


def settle_idle_studies(
    vault: Vault, idle: timedelta, hooks: StudySettledHooks | None = None
) -> list[str]:
    """Settle every receiving study whose last instance is older than ``idle``.

    Time is ``vault.clock``'s. Returns the ids of the studies this call
    settled, after their listeners ran.
    """
    cutoff = vault.clock.now() - idle
    with vault.catalog.session() as session:
        candidates = list(
            session.scalars(
                select(Study.id).where(Study.state == RECEIVING, Study.last_instance_at < cutoff)
            )
        )
    settled = _mark_settled(vault, candidates)
    if hooks is not None:
        for study_id in settled:
            hooks.notify(study_id)
    return settled


Chore = Callable[[], object]


class IdleSettler(threading.Thread):
    """A daemon thread running :func:`settle_idle_studies` every ``interval``, then
    each of ``chores``: the receiver's other periodic work (pending storage-commitment
    reports, :mod:`dicom_ingest.commitment_retry`), which ``vault`` does not know."""

    def __init__(
        self,
        vault: Vault,
        *,
        idle: timedelta,
        interval: timedelta,
        hooks: StudySettledHooks | None = None,
        chores: Iterable[Chore] = (),
    ) -> None:
        super().__init__(name="dicom-vault-settler", daemon=True)
        self._vault = vault
        self._idle = idle
        self._interval = interval.total_seconds()
        self._hooks = hooks
        self._chores = tuple(chores)
        self._stopping = threading.Event()

    @classmethod
    def from_settings(
        cls,
        vault: Vault,
        settings: ScpSettings,
        hooks: StudySettledHooks | None = None,
        *,
        chores: Iterable[Chore] = (),
    ) -> IdleSettler:
        """The timer of ``settings.settle_idle_seconds``, checked every
        ``settings.settle_check_seconds`` (the receiver's, also run by ``serve``)."""
        return cls(
            vault,
            idle=timedelta(seconds=settings.settle_idle_seconds),
            interval=timedelta(seconds=settings.settle_check_seconds),
            hooks=hooks,
            chores=chores,
        )

    def run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.run_once()

    def run_once(self) -> list[str]:
        """One idle check, then the chores; a failure is logged and retried next time."""
        try:
            settled = settle_idle_studies(self._vault, self._idle, self._hooks)
        except SQLAlchemyError as exc:
            log.error("idle study check failed, retrying later: %s", type(exc).__name__)
            settled = []
        for chore in self._chores:
            try:
                chore()
            except Exception as exc:  # noqa: BLE001 (the timer must outlive one bad chore)
                log.error("receiver chore failed, retrying later\n%s", withheld_traceback(exc))
        return settled

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join()
