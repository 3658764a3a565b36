"""Erasure (GDPR article 17): crypto-shred a person's studies, unless they must be kept.

For each study matched to an erasure request, :func:`erase` either erases it
with :func:`vault.retention.erase_study` (its data keys destroyed first, so
that no copy in the store can be decrypted, and the key periods sealed again
so that no catalog backup can open them either; then its objects, originals
and pseudonymised, deleted; its catalog rows replaced by a PHI-free tombstone
with reason ``erased``), or refuses and records why:

* ``legal-hold:<reason code>``: an active legal hold (:mod:`vault.holds`)
  covers the study or its case, because data needed for a dispute is kept;
* ``legal-obligation:<code>``: the DPO states a legal obligation to keep the
  data (for example ``MDR-ANNEX-XIII``, the record-keeping duty for
  custom-made implants), which article 17(3)(b) puts before erasure.

Every study's outcome and ground is a step of the request and a record in the
access log, and is returned for the DPO to report to the person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from vault.catalog.models import Study
from vault.catalog.retention import LegalHold
from vault.core import Vault
from vault.dsr import load, matched_study_ids, record_step, require_open, require_verified
from vault.errors import InvalidInput, NotFound, UnderLegalHold
from vault.holds import REASON_CODE
from vault.retention import ERASED, erase_study


@dataclass
class ErasureOutcome:
    """What :func:`erase` did: studies erased, and those refused with their ground."""

    erased: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


def _hold_ground(session: Session, study_id: str) -> str | None:
    """``legal-hold:<code>`` if an active hold covers the study or its case."""
    study = session.get(Study, study_id)
    if study is None:
        return None
    covers = [LegalHold.study_id == study_id]
    if study.case_id is not None:
        covers.append(LegalHold.case_id == study.case_id)
    query = select(LegalHold.reason_code).where(LegalHold.lifted_at.is_(None), or_(*covers))
    code = session.scalar(query.order_by(LegalHold.placed_at).limit(1))
    return f"legal-hold:{code}" if code else None


def erase_one(vault: Vault, study_id: str, *, actor: str, remote: str | None = None) -> str | None:
    """Crypto-shred one study now through :func:`vault.retention.erase_study`.

    Returns None when erased, else why not: ``legal-hold`` (a hold was placed
    meanwhile) or ``gone`` (erased or expired meanwhile).

    Raises:
        StorageUnavailable: an object could not be deleted; its keys are
            destroyed already (the data is unreadable).
    """
    try:
        erase_study(vault, study_id, actor=actor, reason=ERASED, remote=remote)
    except UnderLegalHold:
        return "legal-hold"
    except NotFound:
        return "gone"
    return None


def _checked_obligation(code: str | None) -> str | None:
    if code is None or not code.strip():
        return None
    if not REASON_CODE.fullmatch(code.strip()):
        raise InvalidInput(
            "a legal obligation is a code of 1 to 40 letters, digits, dots or dashes",
            reason="invalid-obligation",
        )
    return code.strip()


def _grounds(vault: Vault, study_ids: list[str], obligation: str | None) -> dict[str, str | None]:
    """For each existing study, why it must be kept (None: it may be erased)."""
    with vault.catalog.read_session() as session:
        present = set(session.scalars(select(Study.id).where(Study.id.in_(study_ids))))
        return {
            study_id: _hold_ground(session, study_id)
            or (f"legal-obligation:{obligation}" if obligation else None)
            for study_id in study_ids
            if study_id in present
        }


def erase(
    vault: Vault,
    ref: str,
    *,
    actor: str,
    legal_obligation: str | None = None,
    remote: str | None = None,
) -> ErasureOutcome:
    """Erase the studies matched to erasure request ``ref``, or record why not.

    Raises:
        NotFound: no such request.
        RequestNotOpen: closed, or not an erasure request.
        IdentityNotVerified: the requester was not verified yet.
        InvalidInput: no study matched, or a malformed obligation code.
    """
    obligation = _checked_obligation(legal_obligation)
    with vault.catalog.read_session() as session:
        request = load(session, ref)
        require_open(request, "erase")
        require_verified(request)
        grounds = _grounds(vault, matched_study_ids(session, request.id), obligation)
    if not grounds:
        raise InvalidInput("no stored study is matched to this request", reason="no-studies")
    outcome = ErasureOutcome()
    for study_id, ground in grounds.items():
        ground = ground or erase_one(vault, study_id, actor=actor, remote=remote)
        if ground is None:
            outcome.erased.append(study_id)
        else:
            outcome.refused[study_id] = ground
    if outcome.erased:
        vault.keyring.seal_periods()  # old catalog backups lose the erased keys too
    _record(vault, ref, actor, remote, outcome)
    return outcome


def _record(
    vault: Vault, ref: str, actor: str, remote: str | None, outcome: ErasureOutcome
) -> None:
    with vault.catalog.session() as session:
        request = load(session, ref)
        for study_id in outcome.erased:
            record_step(vault, session, request, actor, "erase", study_id=study_id, remote=remote)
        for study_id, ground in outcome.refused.items():
            record_step(
                vault,
                session,
                request,
                actor,
                "erase",
                outcome="refused",
                study_id=study_id,
                ground=ground,
                remote=remote,
            )
