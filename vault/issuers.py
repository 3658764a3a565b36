"""The Issuer of Patient ID values organisations register as their own.

A patient's pseudonym and date offset come from (patient ID, patient-ID
domain) (:mod:`deidentify.pseudonyms`): a patient ID without issuer, or with
an issuer its organisation registered here, is in that organisation's
domain, so a hospital whose PACS writes its issuer and whose CD exports do
not still gets one pseudonym per patient. The de-identification pipeline, the
data-subject search and ingest (:func:`patient_key`: a case's one-patient
rule) read the registrations here; the ``dicom-vault admin
add-issuer / remove-issuer / list-issuers`` commands and the caller's
access-log record change them.

An issuer is compared exactly after stripping surrounding spaces (case
included, as DICOM compares LO values), is a valid LO value (1 to 64
characters, no backslash, no control character) and is registered by one
organisation at most: an issuer two organisations share is a regional
domain, which links their patients by itself when neither registers it.
Registrations change the pseudonyms of studies de-identified afterwards,
never of copies already made.
"""

from __future__ import annotations

import unicodedata

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from vault.catalog.models import Organisation, OrganisationIssuer
from vault.errors import InvalidInput, NotFound

MAX_ISSUER_CHARS = 64


def checked_issuer(value: str) -> str:
    """``value`` stripped, as it is registered and compared.

    Raises:
        InvalidInput: empty, longer than 64 characters, or holding a
            backslash or a control character (the message never repeats it).
    """
    issuer = value.strip(" \0")
    if not issuer or len(issuer) > MAX_ISSUER_CHARS:
        raise InvalidInput(
            f"an issuer has 1 to {MAX_ISSUER_CHARS} characters", reason="issuer-length"
        )
    if "\\" in issuer or any(unicodedata.category(c) in ("Cc", "Cs") for c in issuer):
        raise InvalidInput(
            "an issuer holds no backslash and no control character (tab, newline, escape...)",
            reason="issuer-characters",
        )
    return issuer


def add_issuer(session: Session, organisation: Organisation, value: str) -> OrganisationIssuer:
    """Register ``value`` as an issuer of ``organisation``'s patient IDs.

    Raises:
        InvalidInput: not a valid issuer (:func:`checked_issuer`), or
            registered already (by this organisation or another).
    """
    issuer = checked_issuer(value)
    found = session.scalar(select(OrganisationIssuer).where(OrganisationIssuer.issuer == issuer))
    if found is not None and found.organisation_id == organisation.id:
        raise InvalidInput(
            "this organisation has registered this issuer already", reason="issuer-registered"
        )
    if found is not None:
        owner = session.get(Organisation, found.organisation_id)
        name = owner.name if owner is not None else found.organisation_id
        raise InvalidInput(
            f"organisation {name!r} has registered this issuer; an issuer is one"
            " organisation's own (one that several share links their patients unregistered)",
            reason="issuer-registered",
        )
    row = OrganisationIssuer(organisation_id=organisation.id, issuer=issuer)
    session.add(row)
    session.flush()
    return row


def remove_issuer(session: Session, organisation: Organisation, value: str) -> OrganisationIssuer:
    """Unregister ``value`` from ``organisation``; the row removed.

    Raises:
        InvalidInput: not a valid issuer.
        NotFound: the organisation has not registered it.
    """
    issuer = checked_issuer(value)
    row = session.scalar(
        select(OrganisationIssuer).where(
            OrganisationIssuer.issuer == issuer,
            OrganisationIssuer.organisation_id == organisation.id,
        )
    )
    if row is None:
        raise NotFound("this organisation has not registered this issuer", reason="no-issuer")
    session.delete(row)
    session.flush()
    return row


def issuers_of(session: Session, organisation_id: str) -> list[str]:
    """The issuers ``organisation_id`` registered, sorted."""
    query = select(OrganisationIssuer.issuer).where(
        OrganisationIssuer.organisation_id == organisation_id
    )
    return sorted(session.scalars(query))


_OWNER = select(OrganisationIssuer.organisation_id).where(
    OrganisationIssuer.issuer == bindparam("issuer")
)


def patient_key(connection: Connection, organisation_id: str, patient_id: str, issuer: str) -> str:
    """What a study's catalog patient digest is of: patient ID and issuer, an own issuer as none.

    A patient's studies at one organisation then carry one digest whether they
    came with the issuer it registered (its PACS) or without one (a CD), so a
    case's one-patient rule and the upload summary take them for one patient.
    The data-subject search looks for both forms (:func:`vault.dsr_search.subject_digests`).
    """
    own = issuer.strip(" \0")
    if own and connection.execute(_OWNER, {"issuer": own}).scalar() == organisation_id:
        issuer = ""
    return f"{patient_id}\x00{issuer}"


def registered_issuers(session: Session) -> dict[str, str]:
    """Every registered issuer and the id of the organisation that registered it."""
    rows = session.execute(select(OrganisationIssuer.issuer, OrganisationIssuer.organisation_id))
    return {issuer: organisation_id for issuer, organisation_id in rows}
