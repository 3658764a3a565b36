"""Keyed pseudonyms, UIDs and date offsets, all derived from one HMAC key.

Everything an engineer sees in place of an identifier is an HMAC-SHA256 of it
under the deployment's pseudonym key (a :class:`crypto.keys.MacKey`; the key
bytes never reach this package), with a distinct domain label per use so that
a pseudonym, a UID and a date offset of the same input are unrelated:

* patient pseudonym: ``PSN-`` + base32 of the first 10 bytes (80 bits) of
  ``HMAC(key, "pseudonym" || patient ID || domain kind || domain name)``
  (each field length-prefixed). Stable within a deployment, so a patient's
  studies link; by the birthday bound the chance that any two of ``n``
  patients share one is below ``n**2 / 2**81``: about 4e-13 for a million
  patients, 4e-7 for a billion.
* UIDs: ``2.25.`` + the decimal integer of an RFC 9562 version-8 UUID built
  from the HMAC of the UID (122 free bits; at most 44 characters). The same
  input UID always maps to the same output, so references stay consistent.
  Well-known UIDs of the DICOM registry (SOP classes, transfer syntaxes,
  coding schemes) are returned unchanged.
* date offset: a whole number of days between 1 and 10 years back plus a
  number of seconds within a day, per patient (the same identity as the
  pseudonym), so intervals between one patient's studies stay true.

The patient's identity is (patient ID, *patient-ID domain*), the domain being
where that ID names one person (:class:`PatientIdDomain`, resolved by
:class:`DomainResolver` from Issuer of Patient ID (0010,0021)):

* no issuer, or an issuer an organisation registered as its own
  (``dicom-vault admin add-issuer``): that organisation, by its internal id
  (never its name, which may change). A hospital whose PACS sends its issuer
  and whose CD exports omit it gets one pseudonym per patient; the same ID
  without issuer at two organisations gives two.
* any other issuer: the issuer itself, so organisations sharing a regional
  issuer link their patients.
* no issuer and no organisation known (offline de-identification without
  ``--organisation``): one ``unaffiliated`` domain.

Issuers are compared exactly after stripping surrounding spaces and NULs,
case included, as DICOM compares LO values and the catalog's patient digests
match them: a wrong fold could merge two issuers' patients, a missed match
only keeps them apart. Other Patient IDs Sequence (0010,1002) is not used.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

from pydicom.uid import UID_dictionary

from crypto.keys import MacKey

PSEUDONYM_PREFIX = "PSN-"
_PSEUDONYM_BYTES = 10
_MIN_SHIFT_DAYS = 366
_MAX_SHIFT_DAYS = 3652

DomainKind = Literal["organisation", "issuer", "unaffiliated"]


@dataclass(frozen=True)
class PatientIdDomain:
    """Where a patient ID names one person: an organisation, an issuer, or neither.

    ``name`` is the organisation's internal id, or the issuer as written
    (stripped); empty for ``unaffiliated``. The kind is hashed with the name,
    so an organisation id never meets an issuer that happens to be spelt alike.
    """

    kind: DomainKind
    name: str = ""

    @classmethod
    def of_organisation(cls, organisation_id: str) -> PatientIdDomain:
        return cls("organisation", organisation_id)

    @classmethod
    def of_issuer(cls, issuer: str) -> PatientIdDomain:
        return cls("issuer", _strip(issuer))


UNAFFILIATED = PatientIdDomain("unaffiliated")


@dataclass(frozen=True)
class DomainResolver:
    """Resolves a study's Issuer of Patient ID to its :class:`PatientIdDomain`.

    Parameters
    ----------
    organisation_id:
        The internal id of the organisation the study belongs to (its case's,
        or its inbox's); ``None`` where none is known (offline).
    registered:
        Every registered issuer (stripped, as registered) and the id of the
        organisation that registered it: an issuer is registered by one
        organisation at most.

    Example
    -------
    >>> rule = DomainResolver("org-a", {"HOSP-A": "org-a"})
    >>> rule.domain("") == rule.domain(" HOSP-A ") == PatientIdDomain.of_organisation("org-a")
    True
    >>> rule.domain("REGION-1")
    PatientIdDomain(kind='issuer', name='REGION-1')
    """

    organisation_id: str | None = None
    registered: Mapping[str, str] = field(default_factory=dict)

    def domain(self, issuer_of_patient_id: str) -> PatientIdDomain:
        """The domain of a patient ID given with ``issuer_of_patient_id`` ("" for none)."""
        issuer = _strip(issuer_of_patient_id)
        if not issuer:
            if self.organisation_id is None:
                return UNAFFILIATED
            return PatientIdDomain.of_organisation(self.organisation_id)
        owner = self.registered.get(issuer)
        if owner is not None:
            return PatientIdDomain.of_organisation(owner)
        return PatientIdDomain.of_issuer(issuer)


NO_ORGANISATION = DomainResolver()


def _encode_fields(domain: str, *fields: str) -> bytes:
    """Length-prefixed fields, so ("ab", "c") and ("a", "bc") never collide."""
    parts = [domain.encode()]
    parts.extend(f.encode("utf-8") for f in fields)
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def pseudonym(mac_key: MacKey, patient_id: str, domain: PatientIdDomain) -> str:
    """The patient's pseudonym: ``PSN-`` and 16 base32 characters.

    Parameters
    ----------
    mac_key:
        The deployment's pseudonym key handle (``provider.mac_key("pseudonym")``).
    patient_id:
        The patient ID as the hospital gives it; surrounding spaces and NUL
        padding are ignored.
    domain:
        Where that ID names one person (:meth:`DomainResolver.domain`).

    Example
    -------
    >>> domain = PatientIdDomain.of_issuer("HOSP")
    >>> pseudonym(key, "12345", domain).startswith("PSN-")  # doctest: +SKIP
    True
    """
    data = _encode_fields("pseudonym", _strip(patient_id), domain.kind, domain.name)
    digest = mac_key.mac(data)[:_PSEUDONYM_BYTES]
    return PSEUDONYM_PREFIX + base64.b32encode(digest).decode("ascii")


def study_pseudonym(mac_key: MacKey, study_instance_uid: str) -> str:
    """A pseudonym for a study with no Patient ID: keyed on the study, never shared."""
    digest = mac_key.mac(_encode_fields("pseudonym-study", _strip(study_instance_uid)))
    return PSEUDONYM_PREFIX + base64.b32encode(digest[:_PSEUDONYM_BYTES]).decode("ascii")


def keyed_uid(mac_key: MacKey, uid: str) -> str:
    """``uid`` replaced by ``2.25.<integer>``; registry UIDs are returned unchanged."""
    uid = _strip(uid)
    if not uid or uid in UID_dictionary:
        return uid
    raw = bytearray(mac_key.mac(_encode_fields("uid", uid))[:16])
    raw[6] = (raw[6] & 0x0F) | 0x80  # UUID version 8 (custom)
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return f"2.25.{int.from_bytes(raw, 'big')}"


def date_offset(mac_key: MacKey, patient_id: str, domain: PatientIdDomain) -> timedelta:
    """The patient's shift (the pseudonym's identity): 1 to 10 years back, plus seconds."""
    return _offset(mac_key, _strip(patient_id), domain.kind, domain.name)


def study_date_offset(mac_key: MacKey, study_instance_uid: str) -> timedelta:
    """The shift of a study with no Patient ID: keyed on the study alone."""
    return _offset(mac_key, "study", _strip(study_instance_uid))


def _offset(mac_key: MacKey, *identity: str) -> timedelta:
    digest = mac_key.mac(_encode_fields("date-offset", *identity))
    days = _MIN_SHIFT_DAYS + int.from_bytes(digest[:4], "big") % (
        _MAX_SHIFT_DAYS - _MIN_SHIFT_DAYS + 1
    )
    seconds = int.from_bytes(digest[4:8], "big") % 86400
    return timedelta(days=-days, seconds=seconds)


def _strip(value: str) -> str:
    return value.strip(" \0")


@dataclass(frozen=True)
class PseudonymKeys:
    """The key handles the engine derives pseudonyms, UIDs and date offsets from.

    One HMAC key serves all three uses, separated by domain labels. ``key_id``
    names the key (never its bytes) in reports, so a DPO knows which key
    version a pseudonym came from.
    """

    mac_key: MacKey

    @property
    def key_id(self) -> str:
        return self.mac_key.key_id

    def pseudonym(self, patient_id: str, domain: PatientIdDomain) -> str:
        return pseudonym(self.mac_key, patient_id, domain)

    def study_pseudonym(self, study_instance_uid: str) -> str:
        return study_pseudonym(self.mac_key, study_instance_uid)

    def uid(self, uid: str) -> str:
        return keyed_uid(self.mac_key, uid)

    def date_offset(self, patient_id: str, domain: PatientIdDomain) -> timedelta:
        return date_offset(self.mac_key, patient_id, domain)

    def study_date_offset(self, study_instance_uid: str) -> timedelta:
        return study_date_offset(self.mac_key, study_instance_uid)
