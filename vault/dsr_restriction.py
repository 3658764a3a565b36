"""Restriction of processing (GDPR article 18): engineers lose a person's studies.

:func:`restrict` places a :class:`~vault.catalog.dsr.DsrRestriction` on every
study matched to a request; nothing is deleted or re-encrypted. While one is
active, engineers cannot read the pseudonymised copies of the case holding
the study: the one authorisation rule (:func:`vault.auth.permissions.can_access_case`
and its listings, for ``read-pseudonymised``) leaves such a case out, so the
engineers' listings, downloads, DICOMweb and thumbnails answer as if it did
not exist (404). A case holds one patient under the default policy; where a
case allows several, all of it is withheld while the restriction lasts, so
that nothing of the person is ever served. :func:`lift_restriction` ends the
request's restrictions and access comes back as it was. Both steps are
recorded per study on the request and in the access log.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from vault.catalog.dsr import DsrRestriction
from vault.catalog.models import Study
from vault.core import Vault
from vault.dsr import load, matched_study_ids, record_step, require_open, require_verified
from vault.errors import InvalidInput


def _active() -> ColumnElement[bool]:
    return DsrRestriction.lifted_at.is_(None)


def is_restricted(session: Session, study_id: str) -> bool:
    """Whether an active restriction covers original study ``study_id``."""
    query = select(DsrRestriction.id).where(DsrRestriction.study_id == study_id, _active())
    return session.scalar(query.limit(1)) is not None


def restrict(vault: Vault, ref: str, *, actor: str, remote: str | None = None) -> list[str]:
    """Restrict every study matched to request ``ref``; the ids newly restricted.

    Raises:
        NotFound: no such request.
        RequestNotOpen: closed, or its kind does not call for a restriction.
        IdentityNotVerified: the requester was not verified yet.
        InvalidInput: no study was matched to the request.
    """
    with vault.catalog.session() as session:
        request = load(session, ref)
        require_open(request, "restrict")
        require_verified(request)
        study_ids = _existing(session, matched_study_ids(session, request.id))
        if not study_ids:
            raise InvalidInput("no study is matched to this request", reason="no-studies")
        placed = [s for s in study_ids if not is_restricted(session, s)]
        now = vault.clock.now()
        for study_id in placed:
            session.add(
                DsrRestriction(
                    request_id=request.id, study_id=study_id, placed_at=now, placed_by=actor
                )
            )
            record_step(
                vault, session, request, actor, "restrict", study_id=study_id, remote=remote
            )
    return placed


def lift_restriction(vault: Vault, ref: str, *, actor: str, remote: str | None = None) -> list[str]:
    """Lift the active restrictions request ``ref`` placed; the study ids lifted.

    A restriction outlives the closing of its request (it is the outcome of a
    restriction request), so it can be lifted after the request was closed.

    Raises:
        NotFound: no such request.
    """
    with vault.catalog.session() as session:
        request = load(session, ref)
        rows = list(
            session.scalars(
                select(DsrRestriction).where(DsrRestriction.request_id == request.id, _active())
            )
        )
        now = vault.clock.now()
        for row in rows:
            row.lifted_at, row.lifted_by = now, actor
            step, study_id = "lift-restriction", row.study_id
            record_step(vault, session, request, actor, step, study_id=study_id, remote=remote)
    return [row.study_id for row in rows]


def restricted_ids(session: Session, study_ids: list[str]) -> set[str]:
    """Those of ``study_ids`` an active restriction covers."""
    query = select(DsrRestriction.study_id).where(DsrRestriction.study_id.in_(study_ids), _active())
    return set(session.scalars(query))


def _existing(session: Session, study_ids: list[str]) -> list[str]:
    """Those of ``study_ids`` still in the catalog (not erased), in the same order."""
    present = set(session.scalars(select(Study.id).where(Study.id.in_(study_ids))))
    return [study_id for study_id in study_ids if study_id in present]
