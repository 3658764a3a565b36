"""Study-level de-identification: one settled original study in, its pseudonymised copy out.

:class:`StudyDeidentifier` makes the engineers' copy of a study. It claims
the study's :class:`~vault.catalog.deid.PseudonymisedStudy` row (``running``),
gives the copy a data key of its own, then for every original instance not
yet handled reads it through :func:`vault.reader.open_instance`, runs the
engine with the study's patient-ID domains (its organisation and the issuers
registered in :mod:`vault.issuers`, read once per run), and either writes
the pseudonymised file with :func:`vault.objects.write_encrypted` under the
copy's key and catalogues it (``done``), or catalogues the engine's
quarantine reason and stores nothing. Each instance is committed on its
own, so a run interrupted mid-study
resumes where it stopped; a stored object whose catalogue row could not be
committed is deleted at once. A study whose instances are all handled is
left as it is: running it again adds no row and no object.

The study ends ``done`` (at least one instance stored), ``quarantined``
(every instance held back) or ``failed`` with a PHI-free reason code, and the
outcome is recorded in the access log as ``study.deidentify`` by ``system``.

Example
-------
>>> queue_study(vault, study_id)  # doctest: +SKIP
>>> StudyDeidentifier(vault).run(study_id).state  # doctest: +SKIP
'done'
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from crypto.errors import KeyProviderError
from crypto.keys import DataKey
from deidentify.engine import Deidentifier
from deidentify.outcome import DeidOutcome
from deidentify.profile import Profile
from deidentify.pseudonyms import DomainResolver, PseudonymKeys
from vault.audit import AuditRecord
from vault.catalog.deid import FINAL_STATES, PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.errors import NotFound, StorageUnavailable
from vault.issuers import registered_issuers
from vault.objects import StoredObject, write_encrypted
from vault.reader import open_instance

#: Errors worth retrying later: the store, catalog or key provider was unreachable.
TRANSIENT_ERRORS: Final = (StorageUnavailable, KeyProviderError)

ACTOR: Final = "system"
ACTION: Final = "study.deidentify"


@dataclass(frozen=True)
class DeidSummary:
    """What one run did to one study: internal ids and counts only."""

    study_id: str
    pseudo_study_id: str
    state: str
    instance_count: int
    quarantined_count: int
    processed: int

    def as_dict(self) -> dict[str, str | int]:
        return {
            "study_id": self.study_id,
            "pseudo_study_id": self.pseudo_study_id,
            "state": self.state,
            "instance_count": self.instance_count,
            "quarantined_count": self.quarantined_count,
            "processed": self.processed,
        }


@dataclass
class _Claim:
    pseudo_id: str
    key_id: str | None
    pseudonym: str | None
    pseudo_study_uid: str | None
    finished: bool
    domains: DomainResolver


def engine_for(vault: Vault) -> Deidentifier:
    """The engine configured in ``Settings.deidentify``, keyed by the provider's MAC key."""
    settings = vault.settings.deidentify
    mac_key = vault.keyring.provider.mac_key(settings.pseudonym_key_purpose)
    return Deidentifier(Profile.from_settings(settings), PseudonymKeys(mac_key))


def study_domains(session: Session, study_id: str) -> DomainResolver:
    """How the patient IDs of ``study_id`` resolve to domains: its organisation's id
    and every registered issuer (:mod:`vault.issuers`).

    Raises:
        NotFound: no such study.
    """
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound("no such study")
    return DomainResolver(study.organisation_id, registered_issuers(session))


def queue_study(vault: Vault, study_id: str) -> str:
    """Mark ``study_id`` queued for de-identification and return its copy's id.

    A new or failed copy becomes ``queued``; a running or finished one is
    left as it is (its next run resumes, or finds nothing to do).

    Raises:
        NotFound: no such original study.
    """
    now = vault.clock.now()
    try:
        with _catalog_errors(), vault.catalog.session() as session:
            row = _pseudo_row(session, study_id)
            if row.state == "failed":
                row.state, row.reason, row.queued_at = "queued", None, now
            return row.id
    except sa_exc.IntegrityError:
        # Another process queued it at the same moment: its row stands.
        with vault.catalog.session() as session:
            return _pseudo_row(session, study_id).id


def mark_failed(vault: Vault, study_id: str, reason: str) -> None:
    """Record that the study's de-identification failed for ``reason`` (a code)."""
    _set_state(vault, study_id, "failed", reason, finished=True)


def mark_retrying(vault: Vault, study_id: str, reason: str) -> None:
    """Record that a transient ``reason`` interrupted the run and it is queued again."""
    _set_state(vault, study_id, "queued", f"retry:{reason}", finished=False)


def _set_state(vault: Vault, study_id: str, state: str, reason: str, *, finished: bool) -> None:
    with vault.catalog.session() as session:
        row = session.scalar(
            select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id)
        )
        if row is None:
            return
        row.state, row.reason = state, reason[:80]
        if finished:
            row.finished_at = vault.clock.now()
            vault.audit.record(_audit(row, outcome=f"failed:{reason}"), session=session)


class StudyDeidentifier:
    """Makes (or completes) the pseudonymised copy of one study at a time.

    Parameters
    ----------
    vault:
        The vault holding the originals and receiving the copy.
    engine:
        The engine to apply; :func:`engine_for` ``vault`` if ``None``.
    """

    def __init__(self, vault: Vault, engine: Deidentifier | None = None) -> None:
        self._vault = vault
        self._engine = engine or engine_for(vault)
        self._limit = vault.settings.limits.max_file_bytes

    def run(self, study_id: str) -> DeidSummary:
        """De-identify every instance of ``study_id`` not yet handled.

        Raises:
            NotFound: no such study, or an instance vanished (erased) meanwhile.
            StorageUnavailable, KeyProviderError: transient; run again later.
            KeyDestroyedError, IntegrityError: an original cannot be read.
        """
        remaining = self._remaining(study_id)
        claim = self._claim(study_id, has_work=bool(remaining))
        if claim.finished:
            return self._summary(claim, processed=0)
        if remaining:
            key = self._copy_key(claim)
            for instance_id, sop_class_uid in remaining:
                self._one(claim, key, instance_id, sop_class_uid)
        return self._finish(claim, processed=len(remaining))

    # --- claiming the study and its key ---------------------------------

    def _remaining(self, study_id: str) -> list[tuple[str, str]]:
        """(instance id, SOP class) of the originals without a row in the copy, in order."""
        handled = (
            select(PseudonymisedInstance.source_instance_id)
            .join(PseudonymisedStudy)
            .where(PseudonymisedStudy.study_id == study_id)
        )
        query = (
            select(Instance.id, Instance.sop_class_uid)
            .where(Instance.study_id == study_id, Instance.id.not_in(handled))
            .order_by(Instance.series_id, Instance.instance_number, Instance.id)
        )
        with _catalog_errors(), self._vault.catalog.session() as session:
            if session.get(Study, study_id) is None:
                raise NotFound("no such study")
            return [(row[0], row[1]) for row in session.execute(query)]

    def _claim(self, study_id: str, *, has_work: bool) -> _Claim:
        """Mark the copy ``running``, unless it is finished and nothing new arrived."""
        with _catalog_errors(), self._vault.catalog.session() as session:
            row = _pseudo_row(session, study_id)
            finished = not has_work and row.state in FINAL_STATES
            if not finished:
                row.state, row.reason = "running", None
                row.started_at = self._vault.clock.now()
                row.attempts += 1
            domains = study_domains(session, study_id)
            return _Claim(
                row.id, row.data_key_id, row.pseudonym, row.pseudo_study_uid, finished, domains
            )

    def _copy_key(self, claim: _Claim) -> DataKey:
        """The copy's own data key: created on its first run, reopened afterwards."""
        keyring = self._vault.keyring
        if claim.key_id is not None:
            return keyring.data_key(claim.key_id)
        pending = keyring.generate()
        with _catalog_errors(), self._vault.catalog.session() as session:
            row = session.get(PseudonymisedStudy, claim.pseudo_id)
            if row is None:
                raise NotFound("the pseudonymised study vanished")
            if row.data_key_id is None:
                keyring.persist(session, pending)
                session.flush()  # the key row first: no relationship orders the two
                row.data_key_id = pending.key.key_id
            claim.key_id = row.data_key_id
        if claim.key_id == pending.key.key_id:
            return pending.key
        return keyring.data_key(claim.key_id)  # another run made the key first

    # --- one instance ----------------------------------------------------

    def _one(self, claim: _Claim, key: DataKey, instance_id: str, sop_class_uid: str) -> None:
        with open_instance(self._vault, instance_id) as original:
            outcome = self._engine.deidentify_bytes(original.read(), domains=claim.domains)
        row = PseudonymisedInstance(
            pseudo_study_id=claim.pseudo_id,
            source_instance_id=instance_id,
            sop_class_uid=sop_class_uid,
        )
        if outcome.ok and outcome.encoded is not None:
            stored = self._store(key, outcome.encoded)
            _fill_done(row, outcome, stored)
        else:
            row.state = "quarantined"
            row.reason = outcome.quarantine.code if outcome.quarantine else "no-output"
        self._record(claim, row, outcome)

    def _store(self, key: DataKey, encoded: bytes) -> StoredObject:
        # Handed over as the prefix: write_encrypted stops at the first empty
        # chunk, so with an empty prefix it would store nothing of ``source``.
        return write_encrypted(
            self._vault.store, key, io.BytesIO(), prefix=encoded, limit=self._limit
        )

    def _record(self, claim: _Claim, row: PseudonymisedInstance, outcome: DeidOutcome) -> None:
        """Catalogue ``row``; if that fails (or another run got there first), drop its object."""
        try:
            with _catalog_errors(), self._vault.catalog.session() as session:
                session.add(row)
                self._note_identity(session, claim, outcome)
        except sa_exc.IntegrityError:
            self._drop(row)  # a concurrent run catalogued this instance already
        except BaseException:
            self._drop(row)
            raise

    def _drop(self, row: PseudonymisedInstance) -> None:
        if row.object_key is not None:
            self._vault.store.delete(row.object_key)

    def _note_identity(self, session: Session, claim: _Claim, outcome: DeidOutcome) -> None:
        """Record the copy's pseudonym and study UID the first time they are known."""
        pseudonym = claim.pseudonym or outcome.pseudonym
        study_uid = claim.pseudo_study_uid or outcome.study_uid
        if (pseudonym, study_uid) == (claim.pseudonym, claim.pseudo_study_uid):
            return
        row = session.get(PseudonymisedStudy, claim.pseudo_id)
        if row is not None:
            row.pseudonym, row.pseudo_study_uid = pseudonym, study_uid
        claim.pseudonym, claim.pseudo_study_uid = pseudonym, study_uid

    # --- the end -----------------------------------------------------------

    def _finish(self, claim: _Claim, *, processed: int) -> DeidSummary:
        counts = select(PseudonymisedInstance.state, func.count()).group_by(
            PseudonymisedInstance.state
        )
        counts = counts.where(PseudonymisedInstance.pseudo_study_id == claim.pseudo_id)
        with _catalog_errors(), self._vault.catalog.session() as session:
            by_state = {state: n for state, n in session.execute(counts)}
            row = session.get(PseudonymisedStudy, claim.pseudo_id)
            if row is None:
                raise NotFound("the pseudonymised study vanished")
            row.instance_count = by_state.get("done", 0)
            row.quarantined_count = by_state.get("quarantined", 0)
            row.state, row.reason = _final_state(row.instance_count, row.quarantined_count)
            row.finished_at = self._vault.clock.now()
            outcome = "success" if row.state == "done" else f"{row.state}:{row.reason}"
            self._vault.audit.record(_audit(row, outcome=outcome), session=session)
            return _summary_of(row, processed)

    def _summary(self, claim: _Claim, *, processed: int) -> DeidSummary:
        with self._vault.catalog.session() as session:
            row = session.get(PseudonymisedStudy, claim.pseudo_id)
            if row is None:
                raise NotFound("the pseudonymised study vanished")
            return _summary_of(row, processed)


def _final_state(stored: int, quarantined: int) -> tuple[str, str | None]:
    if stored:
        return "done", None
    if quarantined:
        return "quarantined", "all-instances-quarantined"
    return "failed", "no-instances"


def _fill_done(row: PseudonymisedInstance, outcome: DeidOutcome, stored: StoredObject) -> None:
    row.state = "done"
    row.pseudo_series_uid = outcome.series_uid
    row.pseudo_sop_uid = outcome.sop_instance_uid
    row.object_key, row.key_id = stored.object_key, stored.key_id
    row.sha256, row.size = stored.sha256, stored.size


def _pseudo_row(session: Session, study_id: str) -> PseudonymisedStudy:
    """The study's copy row, created ``queued`` if it has none yet."""
    row = session.scalar(select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id))
    if row is not None:
        return row
    if session.get(Study, study_id) is None:
        raise NotFound("no such study")
    row = PseudonymisedStudy(study_id=study_id, state="queued", attempts=0)
    session.add(row)
    session.flush()
    return row


def _summary_of(row: PseudonymisedStudy, processed: int) -> DeidSummary:
    return DeidSummary(
        study_id=row.study_id,
        pseudo_study_id=row.id,
        state=row.state,
        instance_count=row.instance_count,
        quarantined_count=row.quarantined_count,
        processed=processed,
    )


def _audit(row: PseudonymisedStudy, *, outcome: str) -> AuditRecord:
    return AuditRecord(
        actor=ACTOR,
        action=ACTION,
        outcome=outcome,
        object_type="study",
        object_id=row.study_id,
        detail={
            "pseudonymised_study": row.id,
            "instances": row.instance_count,
            "quarantined": row.quarantined_count,
            "attempts": row.attempts,
        },
    )


@contextmanager
def _catalog_errors() -> Iterator[None]:
    """Turn the catalog being unreachable or locked into :class:`StorageUnavailable`."""
    try:
        yield
    except sa_exc.OperationalError as exc:
        raise StorageUnavailable("the catalog is unavailable") from exc
