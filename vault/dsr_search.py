"""Finding a data subject's studies from the identifiers they give, inside the vault.

The catalog holds no patient id in clear, only ``HMAC(index key, "patient" ||
patient id || 0x00 || issuer)`` per study. The identifiers the requester
gives are digested the same way (with each issuer given, and with none) and
matched exactly: only studies carrying one of those digests are candidates,
so nobody else's study is ever looked at. As pseudonyms do
(:mod:`deidentify.pseudonyms`), the search takes a patient ID in its domain:
an issuer an organisation registered (:mod:`vault.issuers`) stands for all
that organisation's registered issuers, and so does the organisation given,
so the studies its PACS sent with its issuer and those of its CD exports
without one are found together.

When the requester also gives a name or a birth date, each candidate study's
header is read back through the one decrypting reader
(:func:`vault.reader.open_instance`, header only, no pixels) and a study whose
header disagrees is left out: a patient id reused by another hospital without
an issuer does not hand one person's images to another. Only counts of such
exclusions are reported; the given values are never stored (the digests are,
on the request, so that it can be audited and re-run).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from crypto.errors import CryptoError
from dicom_ingest.header import read_header
from vault.catalog.dsr import DataSubjectRequest, DsrStudy, carries_subject
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.dsr import load, record_step, require_open
from vault.errors import InvalidInput, VaultError
from vault.issuers import registered_issuers
from vault.reader import open_instance

_DATE = re.compile(r"\d{8}")
_NAME_SPLIT = re.compile(r"[\^\s,=]+")
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class SubjectIdentifiers:
    """What the requester gave to be found by (held in memory only)."""

    patient_id: str
    issuers: tuple[str, ...] = ()
    organisation_id: str | None = None
    name: str | None = None
    birth_date: str | None = None

    def checked(self) -> SubjectIdentifiers:
        """Validated and trimmed copy.

        Raises:
            InvalidInput: no patient id, an over-long value or a malformed date.
        """
        patient_id = self.patient_id.strip()
        issuers = tuple(sorted({i.strip() for i in self.issuers if i.strip()}))
        if not patient_id or any(len(v) > MAX_ID_CHARS for v in (patient_id, *issuers)):
            raise InvalidInput(
                "a patient ID of 1 to 64 characters is required", reason="patient-id"
            )
        birth_date = (self.birth_date or "").strip().replace("-", "") or None
        if birth_date is not None and not _DATE.fullmatch(birth_date):
            raise InvalidInput("the birth date is YYYY-MM-DD or YYYYMMDD", reason="birth-date")
        name = (self.name or "").strip() or None
        if name is not None and len(name) > 200:
            raise InvalidInput("the name is at most 200 characters", reason="name")
        return SubjectIdentifiers(patient_id, issuers, self.organisation_id, name, birth_date)


@dataclass(frozen=True)
class SearchOutcome:
    candidates: int
    matched: list[str]
    excluded: int


def subject_digests(
    vault: Vault, given: SubjectIdentifiers, registered: Mapping[str, str] | None = None
) -> list[str]:
    """The catalog digests the person's studies carry if they match ``given``.

    ``registered`` maps each registered issuer to its organisation's id
    (:func:`vault.issuers.registered_issuers`): the issuers of every
    organisation given, or owning an issuer given, are searched too.
    """
    issuers = {"", *given.issuers, *_same_domain(given, registered or {})}
    keys = [f"{given.patient_id}\x00{issuer}" for issuer in issuers]
    return sorted({vault.index.digest("patient", key) for key in keys})


def _same_domain(given: SubjectIdentifiers, registered: Mapping[str, str]) -> set[str]:
    """The registered issuers in the same organisation domain as what was given."""
    owners = {registered[issuer] for issuer in given.issuers if issuer in registered}
    if given.organisation_id:
        owners.add(given.organisation_id)
    return {issuer for issuer, owner in registered.items() if owner in owners}


def _name_tokens(value: str) -> set[str]:
    return {token for token in _NAME_SPLIT.split(value.casefold()) if token}


def _header_agrees(vault: Vault, instance_id: str, given: SubjectIdentifiers) -> bool:
    """Whether the instance's header carries the given name and birth date."""
    limit = vault.settings.limits.max_header_bytes
    with open_instance(vault, instance_id) as stream:
        header, _ = read_header(stream, max_header_bytes=limit)
    dataset = header.dataset
    if given.birth_date and str(dataset.get("PatientBirthDate", "")) != given.birth_date:
        return False
    if given.name:
        return _name_tokens(given.name) <= _name_tokens(str(dataset.get("PatientName", "")))
    return True


def _candidates(session: Session, digests: list[str], organisation_id: str | None) -> list[str]:
    query = select(Study.id).where(carries_subject(digests))
    if organisation_id:
        query = query.where(Study.organisation_id == organisation_id)
    return list(session.scalars(query.order_by(Study.received_at, Study.id)))


def _first_instance(vault: Vault, study_id: str) -> str | None:
    with vault.catalog.read_session() as session:
        query = select(Instance.id).where(Instance.study_id == study_id)
        return session.scalar(query.order_by(Instance.received_at, Instance.id).limit(1))


def _confirmed(vault: Vault, study_id: str, given: SubjectIdentifiers) -> bool:
    if not (given.name or given.birth_date):
        return True
    instance_id = _first_instance(vault, study_id)
    if instance_id is None:
        return False
    try:
        return _header_agrees(vault, instance_id, given)
    except (VaultError, CryptoError):
        return False  # unreadable (erased meanwhile): nothing to hand over


def _link(
    session: Session, request: DataSubjectRequest, study_ids: list[str], at: datetime
) -> None:
    linked = set(
        session.scalars(select(DsrStudy.study_id).where(DsrStudy.request_id == request.id))
    )
    for study_id in study_ids:
        if study_id not in linked:
            session.add(DsrStudy(request_id=request.id, study_id=study_id, matched_at=at))


def find_subject_studies(
    vault: Vault, ref: str, given: SubjectIdentifiers, *, actor: str, remote: str | None = None
) -> SearchOutcome:
    """Match the person's studies to request ``ref`` and record the search.

    Raises:
        NotFound: no such request.
        RequestNotOpen: the request is closed.
        InvalidInput: unusable identifiers.
    """
    given = given.checked()
    with vault.catalog.read_session() as session:
        require_open(load(session, ref))
        digests = subject_digests(vault, given, registered_issuers(session))
        candidates = _candidates(session, digests, given.organisation_id)
    matched = [study_id for study_id in candidates if _confirmed(vault, study_id, given)]
    with vault.catalog.session() as session:
        request = load(session, ref)
        known = set(json.loads(request.subject_digests))
        request.subject_digests = json.dumps(sorted(known | set(digests)))
        _link(session, request, matched, vault.clock.now())
        detail = {
            "candidates": len(candidates),
            "matched": len(matched),
            "excluded": len(candidates) - len(matched),
            "checked_header": bool(given.name or given.birth_date),
        }
        outcome = "success" if matched else "not-found"
        record_step(
            vault, session, request, actor, "search", outcome=outcome, detail=detail, remote=remote
        )
    return SearchOutcome(len(candidates), matched, len(candidates) - len(matched))
