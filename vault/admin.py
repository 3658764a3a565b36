"""Administrative catalog operations shared by the CLI and the admin pages.

Each function takes a session and returns the row it made or found; the
caller records the access-log entry.
"""

from __future__ import annotations

import difflib

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.case_rules import other_patient_in_case, require_open
from vault.catalog.accounts import ROLES, CaseAssignment, User
from vault.catalog.models import Case, Organisation, PacsNode, Study
from vault.errors import InvalidInput, NotFound, PolicyRefused


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


def organisation_named(session: Session, name: str) -> Organisation:
    """The organisation called exactly ``name`` (surrounding blanks ignored).

    Raises:
        NotFound: none is; the message names up to three close matches, so
            that a typo is not taken for a new organisation.
    """
    wanted = name.strip()
    organisation = session.scalar(select(Organisation).where(Organisation.name == wanted))
    if organisation is None:
        raise NotFound(_no_such_organisation(session, wanted), reason="no-organisation")
    return organisation


def _no_such_organisation(session: Session, name: str) -> str:
    """'no organisation named ...', with the close matches (case ignored), if any."""
    names = {existing.lower(): existing for existing in session.scalars(select(Organisation.name))}
    close = difflib.get_close_matches(name.lower(), list(names), n=3, cutoff=0.6)
    hint = f" (close matches: {', '.join(names[c] for c in close)})" if close else ""
    return f"no organisation named {name!r}{hint}"


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


def close_case(session: Session, case: Case) -> Case:
    """Close ``case``: the receiver files no new push under it (they go to the
    inbox), nor is an inbox study filed there; what it holds is kept.

    Raises:
        InvalidInput: the case is already closed.
    """
    if case.status != "open":
        raise InvalidInput("this case is already closed")
    case.status = "closed"
    session.flush()
    return case


def file_study(session: Session, study_id: str, case: Case, *, one_patient_per_case: bool) -> Study:
    """File a study of the inbox (one the receiver matched to no case) under ``case``.

    The engineers assigned to ``case`` then reach its pseudonymised copy. Only
    an inbox study is filed: moving a study between cases changes who sees it,
    and is not done here.

    Raises:
        NotFound: no such study.
        PolicyRefused: the study is already under a case; the case is of
            another organisation; or (one patient per case) the case holds a
            study of another patient.
        CaseClosed: the case is not open.
    """
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound("no such study")
    if study.case_id is not None:
        raise PolicyRefused("this study is already filed under a case")
    if case.organisation_id != study.organisation_id:
        raise PolicyRefused("this case belongs to another organisation than the study")
    require_open(case)
    if one_patient_per_case and other_patient_in_case(
        session.connection(), case.id, study.patient_digest
    ):
        raise PolicyRefused("this case already holds a study of another patient")
    study.case_id = case.id
    session.flush()
    return study


def register_pacs_node(
    session: Session,
    ae_title: str,
    organisation: Organisation,
    *,
    host: str | None = None,
    cert_sha256: str | None = None,
) -> PacsNode:
    """A new enabled PACS node: calling AE title ``ae_title`` of ``organisation``.

    ``host`` is ``"host"`` or ``"host:port"`` (where storage-commitment reports
    go when the PACS closed its association); ``cert_sha256`` the hex SHA-256
    of its TLS client certificate, required on every association when set.

    Raises:
        InvalidInput: the AE title is empty, too long, or already registered.
    """
    title = ae_title.strip()
    if not title or len(title) > 16 or "\\" in title:
        raise InvalidInput("an AE title has 1 to 16 characters and no backslash")
    if session.scalar(select(PacsNode).where(PacsNode.ae_title == title)) is not None:
        raise InvalidInput("this AE title is already registered")
    node = PacsNode(
        organisation_id=organisation.id,
        ae_title=title,
        host=host,
        cert_sha256=_fingerprint(cert_sha256) if cert_sha256 else None,
        enabled=True,
    )
    session.add(node)
    session.flush()
    return node


def normalise_fingerprint(value: str) -> str:
    """A certificate's SHA-256 as compared and stored: colons and surrounding
    blanks removed, lower case (``AB:CD:...`` and ``abcd...`` are the same)."""
    return value.replace(":", "").strip().lower()


def _fingerprint(cert_sha256: str) -> str:
    """:func:`normalise_fingerprint`, checked to be 64 hex digits.

    Raises:
        InvalidInput: not 64 hex digits.
    """
    fingerprint = normalise_fingerprint(cert_sha256)
    if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
        raise InvalidInput("a certificate fingerprint is 64 hex digits (SHA-256)")
    return fingerprint


def pacs_node(session: Session, ae_title: str) -> PacsNode:
    """The PACS node registered as ``ae_title``. Raises NotFound."""
    node = session.scalar(select(PacsNode).where(PacsNode.ae_title == ae_title.strip()))
    if node is None:
        raise NotFound("no such PACS node")
    return node


def set_pacs_node_enabled(session: Session, ae_title: str, enabled: bool) -> PacsNode:
    """Enable or disable the PACS node ``ae_title`` (new associations; those
    already open run to their end). Raises NotFound."""
    node = pacs_node(session, ae_title)
    node.enabled = enabled
    session.flush()
    return node


def update_pacs_node(
    session: Session,
    ae_title: str,
    *,
    host: str | None = None,
    cert_sha256: str | None = None,
    clear_cert: bool = False,
) -> PacsNode:
    """Change where a node's commitment reports go (``host``), or the client
    certificate it must present (``cert_sha256``; ``clear_cert`` to require
    none). Arguments left ``None`` are kept.

    Raises:
        NotFound: no node ``ae_title``.
        InvalidInput: a fingerprint that is not 64 hex digits, or both a new
            fingerprint and ``clear_cert``.
    """
    if clear_cert and cert_sha256:
        raise InvalidInput("give a new certificate fingerprint or clear it, not both")
    node = pacs_node(session, ae_title)
    if host is not None:
        node.host = host.strip() or None
    if cert_sha256:
        node.cert_sha256 = _fingerprint(cert_sha256)
    if clear_cert:
        node.cert_sha256 = None
    session.flush()
    return node


# --- accounts (vault.auth) -----------------------------------------------


def create_user(
    session: Session,
    email: str,
    role: str,
    organisation: Organisation,
    *,
    password_hash: str | None = None,
) -> User:
    """A new user ``email`` with ``role`` in ``organisation``.

    Raises:
        InvalidInput: unknown role, malformed or already used e-mail address.
    """
    address = email.strip().lower()
    if role not in ROLES:
        raise InvalidInput(f"the role must be one of {', '.join(ROLES)}")
    if "@" not in address or len(address) > 254 or any(c.isspace() for c in address):
        raise InvalidInput("this is not an e-mail address")
    if session.scalar(select(User).where(User.email == address)) is not None:
        raise InvalidInput("a user with this e-mail address already exists")
    user = User(
        email=address, role=role, organisation_id=organisation.id, password_hash=password_hash
    )
    session.add(user)
    session.flush()
    return user


def user_by_email(session: Session, email: str) -> User:
    """The user with ``email``. Raises NotFound."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound("no such user")
    return user


def assign_case(session: Session, case: Case, user: User) -> CaseAssignment:
    """Assign engineer ``user`` to ``case`` (idempotent).

    Raises:
        InvalidInput: ``user`` is not an engineer.
    """
    if user.role != "engineer":
        raise InvalidInput("only engineers are assigned to cases")
    found = session.scalar(
        select(CaseAssignment).where(
            CaseAssignment.case_id == case.id, CaseAssignment.user_id == user.id
        )
    )
    if found is not None:
        return found
    assignment = CaseAssignment(case_id=case.id, user_id=user.id)
    session.add(assignment)
    session.flush()
    return assignment
