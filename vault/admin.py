"""Administrative catalog operations shared by the CLI and the admin pages.

Each function takes a session and returns the row it made or found; the
caller records the access-log entry.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.catalog.models import Case, Organisation
from vault.errors import InvalidInput, NotFound


def get_or_create_organisation(
    session: Session, name: str, *, kind: str = "hospital"
) -> Organisation:
    """The organisation called ``name``, created if missing."""
    organisation = session.scalar(select(Organisation).where(Organisation.name == name))
    if organisation is None:
        organisation = Organisation(name=name, kind=kind)
        session.add(organisation)
        session.flush()
    return organisation


def create_case(session: Session, reference: str, organisation: Organisation) -> Case:
    """A new open case ``reference`` of ``organisation``.

    Raises:
        InvalidInput: the reference is already used.
    """
    if session.scalar(select(Case).where(Case.reference == reference)) is not None:
        raise InvalidInput("a case with this reference already exists")
    case = Case(reference=reference, organisation_id=organisation.id)
    session.add(case)
    session.flush()
    return case


def case_by_reference(session: Session, reference: str) -> Case:
    """The case called ``reference``. Raises NotFound."""
    case = session.scalar(select(Case).where(Case.reference == reference))
    if case is None:
        raise NotFound("no such case")
    return case
