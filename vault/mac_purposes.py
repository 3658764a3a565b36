"""The MAC key purposes the vault keeps for its own keyed digests.

A purpose names one MAC key of the key provider (``provider.mac_key(purpose)``):
two uses that share a purpose share a key, so a digest made for one would be
accepted or matched by the other. The pseudonym purpose is a setting
(``deidentify.pseudonym_key_purpose``) and is refused if it names one of these.
"""

from __future__ import annotations

CATALOG_INDEX = "catalog-index"
AUDIT_CHECKPOINT = "audit-checkpoint"
TOTP_SEAL = "totp-seal"

RESERVED = frozenset({CATALOG_INDEX, AUDIT_CHECKPOINT, TOTP_SEAL})
