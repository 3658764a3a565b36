"""Re-identification: from a pseudonym back to the original studies, audited.

Engineers only ever see pseudonyms. Mapping one back is a separate action for
the data-protection officer: it names the original studies (internal ids and
case references, still no PHI) so that their identified data can then be
reached through the normal, audited export. Every call is recorded in the
access log with the request reference it was made under, found or not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from vault.audit import AuditRecord
from vault.catalog.deid import PseudonymisedStudy
from vault.catalog.models import Case, Study
from vault.core import Vault
from vault.errors import InvalidInput

_REFERENCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


@dataclass(frozen=True)
class OriginalStudy:
    study_id: str
    case_reference: str | None
    received_at: datetime
    pseudonymised_study_id: str


def reidentify(
    vault: Vault, pseudonym: str, *, actor: str, request_ref: str
) -> list[OriginalStudy]:
    """The original studies behind ``pseudonym``.

    Parameters:
        actor: who asks (``user:<id>`` of a DPO, or ``cli``).
        request_ref: the reference of the request or incident this is done for
            (letters, digits, ``.``, ``_``, ``-``; recorded in the access log).

    Raises:
        InvalidInput: no usable request reference.
    """
    if not _REFERENCE.fullmatch(request_ref):
        raise InvalidInput("a request reference (letters, digits, '.', '_', '-') is required")
    with vault.catalog.read_session() as session:
        rows = session.execute(
            select(Study.id, Case.reference, Study.received_at, PseudonymisedStudy.id)
            .join(PseudonymisedStudy, PseudonymisedStudy.study_id == Study.id)
            .outerjoin(Case, Case.id == Study.case_id)
            .where(PseudonymisedStudy.pseudonym == pseudonym)
            .order_by(Study.received_at)
        ).all()
    found = [OriginalStudy(*row) for row in rows]
    vault.audit.record(
        AuditRecord(
            actor=actor,
            action="pseudonym.reidentify",
            outcome="success" if found else "not-found",
            object_type="pseudonymised-study",
            object_id=found[0].pseudonymised_study_id if found else None,
            detail={"request": request_ref, "studies": len(found)},
        )
    )
    return found
