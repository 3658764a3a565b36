"""Legal holds: data needed for a dispute is kept for its duration.

A hold names a case (every study of it) or one study, and a reason code (a
reference such as ``DISPUTE-2026-014``, never free text about a patient).
While a hold is active, :func:`vault.retention.expire_studies` skips the data
it covers and :func:`vault.retention.erase_study` refuses it. Placing and
lifting a hold are recorded in the access log (``hold.place``, ``hold.lift``).

Where the store has S3 Object Lock, a hold is mirrored as an S3 legal hold on
every object of the studies it covers (:mod:`vault.object_lock`): placed right
after the hold is recorded (a store that is down is caught up by the daily
run), lifted before the hold is (a store that refuses keeps the hold), and
only on the studies no other active hold still covers.
"""

from __future__ import annotations

import logging
import re

from sqlalchemy import ColumnElement, exists, or_, select
from sqlalchemy.orm import Session

from vault.audit import AuditRecord
from vault.catalog.models import Case, Study
from vault.catalog.retention import LegalHold
from vault.core import Vault
from vault.errors import InvalidInput, NotFound, StorageUnavailable
from vault.object_lock import mirror_hold

log = logging.getLogger(__name__)

REASON_CODE = re.compile(r"[A-Za-z0-9._-]{1,40}")


def _checked_reason(reason_code: str) -> str:
    if not REASON_CODE.fullmatch(reason_code):
        raise InvalidInput(
            "a hold's reason code is 1 to 40 letters, digits, dots, dashes or underscores",
            reason="invalid-reason-code",
        )
    return reason_code


def _target(session: Session, case_id: str | None, study_id: str | None) -> tuple[str, str]:
    """("case" | "study", id) of the hold's existing target."""
    if (case_id is None) == (study_id is None):
        raise InvalidInput("a hold names exactly one case or one study", reason="hold-target")
    if case_id is not None:
        if session.get(Case, case_id) is None:
            raise NotFound("no such case")
        return "case", case_id
    if session.get(Study, study_id) is None:
        raise NotFound("no such study")
    return "study", str(study_id)


def place_hold(
    vault: Vault,
    *,
    reason_code: str,
    placed_by: str,
    case_id: str | None = None,
    study_id: str | None = None,
) -> LegalHold:
    """Place a legal hold on case ``case_id`` or study ``study_id``.

    Raises:
        InvalidInput: a malformed reason code, or not exactly one target.
        NotFound: no such case or study.
    """
    reason_code = _checked_reason(reason_code)
    with vault.catalog.session() as session:
        kind, target = _target(session, case_id, study_id)
        hold = LegalHold(
            case_id=case_id,
            study_id=study_id,
            reason_code=reason_code,
            placed_by=placed_by,
            placed_at=vault.clock.now(),
        )
        session.add(hold)
        session.flush()
        detail = {"target_type": kind, "target_id": target, "reason_code": reason_code}
        record = AuditRecord(
            placed_by, "hold.place", object_type="legal_hold", object_id=hold.id, detail=detail
        )
        vault.audit.record(record, session=session)
    try:
        mirror_hold(vault, _covered(vault, hold), on=True)
    except StorageUnavailable as exc:
        log.warning("S3 legal hold not placed yet (%s); the daily run places it", exc.reason)
    return hold


def lift_hold(vault: Vault, hold_id: str, *, lifted_by: str) -> LegalHold:
    """Lift active hold ``hold_id``; the data it covered may then expire.

    Raises:
        NotFound: no such hold.
        InvalidInput: the hold was already lifted.
        StorageUnavailable: the store did not lift its S3 legal holds; the
            hold stays active.
    """
    with vault.catalog.read_session() as session:
        _active(session, hold_id)
    released = _released_by(vault, hold_id)
    mirror_hold(vault, released, on=False)
    with vault.catalog.session() as session:
        hold = _active(session, hold_id)
        hold.lifted_at, hold.lifted_by = vault.clock.now(), lifted_by
        record = AuditRecord(lifted_by, "hold.lift", object_type="legal_hold", object_id=hold.id)
        vault.audit.record(record, session=session)
    return hold


def list_holds(vault: Vault, *, include_lifted: bool = False) -> list[LegalHold]:
    """Holds in the order they were placed (active ones only unless asked)."""
    query = select(LegalHold).order_by(LegalHold.placed_at, LegalHold.id)
    if not include_lifted:
        query = query.where(LegalHold.lifted_at.is_(None))
    with vault.catalog.read_session() as session:
        return list(session.scalars(query))


def under_hold() -> ColumnElement[bool]:
    """A condition on :class:`Study` rows: an active hold covers the study or its case."""
    active = LegalHold.lifted_at.is_(None)
    return exists().where(
        active,
        or_(
            LegalHold.study_id == Study.id,
            (LegalHold.case_id.is_not(None)) & (LegalHold.case_id == Study.case_id),
        ),
    )


def _active(session: Session, hold_id: str) -> LegalHold:
    hold = session.get(LegalHold, hold_id)
    if hold is None:
        raise NotFound("no such legal hold")
    if hold.lifted_at is not None:
        raise InvalidInput("the legal hold was already lifted", reason="hold-lifted")
    return hold


def _studies_of(hold: LegalHold) -> ColumnElement[bool]:
    if hold.case_id is not None:
        return Study.case_id == hold.case_id
    return Study.id == hold.study_id


def _covered(vault: Vault, hold: LegalHold) -> list[str]:
    """The ids of the studies ``hold`` covers."""
    with vault.catalog.read_session() as session:
        return list(session.scalars(select(Study.id).where(_studies_of(hold))))


def _released_by(vault: Vault, hold_id: str) -> list[str]:
    """The studies lifting ``hold_id`` leaves with no active hold."""
    with vault.catalog.read_session() as session:
        hold = _active(session, hold_id)
        others = LegalHold.lifted_at.is_(None) & (LegalHold.id != hold_id)
        still_held = exists().where(
            others,
            or_(
                LegalHold.study_id == Study.id,
                LegalHold.case_id.is_not(None) & (LegalHold.case_id == Study.case_id),
            ),
        )
        return list(session.scalars(select(Study.id).where(_studies_of(hold), ~still_held)))
