"""Keyed pseudonyms, UIDs and date offsets, all derived from one HMAC key.

Everything an engineer sees in place of an identifier is an HMAC-SHA256 of it
under the deployment's pseudonym key (a :class:`crypto.keys.MacKey`; the key
bytes never reach this package), with a distinct domain label per use so that
a pseudonym, a UID and a date offset of the same input are unrelated:

* patient pseudonym: ``PSN-`` + base32 of the first 10 bytes (80 bits) of
  ``HMAC(key, "pseudonym" || patient ID || issuer)``. Stable within a
  deployment, so a patient's studies link; by the birthday bound the chance
  that any two of ``n`` patients share one is below ``n**2 / 2**81``: about
  4e-13 for a million patients, 4e-7 for a billion.
* UIDs: ``2.25.`` + the decimal integer of an RFC 9562 version-8 UUID built
  from the HMAC of the UID (122 free bits; at most 44 characters). The same
  input UID always maps to the same output, so references stay consistent.
  Well-known UIDs of the DICOM registry (SOP classes, transfer syntaxes,
  coding schemes) are returned unchanged.
* date offset: a whole number of days between 1 and 10 years back plus a
  number of seconds within a day, per patient, so intervals between one
  patient's studies stay true.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta

from pydicom.uid import UID_dictionary

from crypto.keys import MacKey

PSEUDONYM_PREFIX = "PSN-"
_PSEUDONYM_BYTES = 10
_MIN_SHIFT_DAYS = 366
_MAX_SHIFT_DAYS = 3652


def _encode_fields(domain: str, *fields: str) -> bytes:
    """Length-prefixed fields, so ("ab", "c") and ("a", "bc") never collide."""
    parts = [domain.encode()]
    parts.extend(f.encode("utf-8") for f in fields)
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def pseudonym(mac_key: MacKey, patient_id: str, issuer_of_patient_id: str = "") -> str:
    """The patient's pseudonym: ``PSN-`` and 16 base32 characters.

    Parameters
    ----------
    mac_key:
        The deployment's pseudonym key handle (``provider.mac_key("pseudonym")``).
    patient_id, issuer_of_patient_id:
        The patient's identity as the hospital gives it; surrounding spaces
        and NUL padding are ignored.

    Example
    -------
    >>> pseudonym(key, "12345", "HOSP").startswith("PSN-")  # doctest: +SKIP
    True
    """
    data = _encode_fields("pseudonym", _strip(patient_id), _strip(issuer_of_patient_id))
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


def date_offset(mac_key: MacKey, identity: tuple[str, ...]) -> timedelta:
    """The per-patient shift: between 1 and 10 years back, plus seconds within a day."""
    digest = mac_key.mac(_encode_fields("date-offset", *(_strip(p) for p in identity)))
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

    def pseudonym(self, patient_id: str, issuer_of_patient_id: str = "") -> str:
        return pseudonym(self.mac_key, patient_id, issuer_of_patient_id)

    def study_pseudonym(self, study_instance_uid: str) -> str:
        return study_pseudonym(self.mac_key, study_instance_uid)

    def uid(self, uid: str) -> str:
        return keyed_uid(self.mac_key, uid)

    def date_offset(self, identity: tuple[str, ...]) -> timedelta:
        return date_offset(self.mac_key, identity)
