"""One access-log record described in audit-standard terms, format-neutral.

:func:`describe` turns a stored record (an ORM ``AuditEvent`` or a Core row
with the same columns) into an :class:`AuditMessage`: the event's meaning
(:mod:`vault.audit_codes`), its outcome indicator, the active participants
(the requestor, with its network access point, and the vault itself) and
the participant objects. :mod:`vault.audit_atna` renders it as a DICOM Audit
Message, :mod:`vault.audit_fhir` as a FHIR AuditEvent.

Every message carries one ``audit-record`` participant object: the record's
sequence number, with its chain hash and its ``detail`` values as object
details, so that a collector's copy can be matched to the vault's chain.
Internal ids named in ``detail`` (``study``, ``pseudonymised_study``,
``case``, a hold's target) become participant objects of their own. Nothing
here reads PHI: records hold none.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from vault.audit_codes import (
    Code,
    EventKind,
    ObjectKind,
    event_kind,
    object_kind,
    outcome_indicator,
)


class StoredRecord(Protocol):
    """The columns of ``audit_events`` (an ORM object or a Core row)."""

    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str | None
    object_id: str | None
    outcome: str
    remote: str | None
    detail: str
    hash: str


@dataclass(frozen=True)
class AuditSource:
    """Who reports: AuditSourceID, the enterprise site, the vault's host name."""

    source_id: str
    site_id: str | None = None
    host: str = ""

    @classmethod
    def of(cls, source_id: str | None, site_id: str | None) -> AuditSource:
        host = socket.gethostname()
        return cls(source_id or f"dicom-vault@{host}", site_id, host)


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant / FHIR agent."""

    user_id: str
    requestor: bool
    role: Code | None = None
    network_id: str | None = None
    network_type: str | None = None  # "1" machine name, "2" IP address


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification / FHIR entity."""

    object_type: str
    object_id: str
    kind: ObjectKind
    lifecycle: str | None = None
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class AuditMessage:
    seq: int
    at: datetime
    action: str
    outcome: str
    kind: EventKind
    indicator: str
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...]
    source: AuditSource

    @property
    def outcome_description(self) -> str | None:
        """The recorded outcome when it is not a plain success (a reason code)."""
        return None if self.outcome == "success" else self.outcome


def network_point(remote: str | None) -> tuple[str | None, str | None]:
    """The host of ``remote`` (``ip``, ``ip:port`` or a name) and its type code."""
    if not remote:
        return None, None
    for candidate in (remote, remote.rsplit(":", 1)[0].strip("[]")):
        try:
            return str(ipaddress.ip_address(candidate)), "2"
        except ValueError:
            continue
    return remote.rsplit(":", 1)[0], "1"


def _detail_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# detail keys that name another vault object by its internal id
_REFERENCES = {"study": "study", "pseudonymised_study": "pseudonymised-study", "case": "case"}


def _referenced(detail: dict[str, object], lifecycle: str | None) -> list[ParticipantObject]:
    found = [(kind, detail.get(key)) for key, kind in _REFERENCES.items()]
    if isinstance(detail.get("target_type"), str):
        found.append((str(detail["target_type"]), detail.get("target_id")))
    return [
        ParticipantObject(kind, str(oid), object_kind(kind), lifecycle)
        for kind, oid in found
        if isinstance(oid, str) and oid
    ]


def _objects(record: StoredRecord, kind: EventKind) -> tuple[ParticipantObject, ...]:
    detail = json.loads(record.detail or "{}")
    objects = []
    if record.object_id:
        object_type = record.object_type or "object"
        objects.append(
            ParticipantObject(
                object_type, record.object_id, object_kind(object_type), kind.lifecycle
            )
        )
    objects.extend(_referenced(detail, kind.lifecycle))
    pairs = [("hash", record.hash)] + [(k, _detail_text(v)) for k, v in sorted(detail.items())]
    objects.append(
        ParticipantObject(
            "audit-record", str(record.seq), object_kind("audit-record"), details=tuple(pairs)
        )
    )
    return tuple(objects)


def _participants(
    record: StoredRecord, kind: EventKind, source: AuditSource
) -> tuple[Participant, ...]:
    network_id, network_type = network_point(record.remote)
    requestor = Participant(record.actor, True, kind.requestor_role, network_id, network_type)
    vault = Participant(source.source_id, False, kind.vault_role, source.host or None, "1")
    return (requestor, vault)


def describe(record: StoredRecord, source: AuditSource) -> AuditMessage:
    """``record`` in audit-standard terms (see the module docstring)."""
    kind = event_kind(record.action, record.outcome)
    return AuditMessage(
        seq=record.seq,
        at=record.at.astimezone(UTC),
        action=record.action,
        outcome=record.outcome,
        kind=kind,
        indicator=outcome_indicator(record.outcome),
        participants=_participants(record, kind, source),
        objects=_objects(record, kind),
        source=source,
    )
