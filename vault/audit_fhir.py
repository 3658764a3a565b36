"""FHIR R4 AuditEvent resources from access-log records.

The release is FHIR R4 (4.0.1), the one IHE's Basic Audit Log Patterns
profile and most FHIR servers use; R4B did not change AuditEvent, and the
export tests parse every resource with ``fhir.resources.R4B``.

:func:`fhir_audit_event` renders an :class:`~vault.audit_message.AuditMessage`
as a plain JSON-ready dict, following the DICOM-to-FHIR mapping of the
AuditEvent resource: ``type`` is the DICOM EventID, ``subtype`` the
EventTypeCodes (and the vault's own action code), ``action`` and ``outcome``
the DICOM codes, agents the ActiveParticipants, ``source`` the audit source,
entities the participant objects (identifiers only: no PHI). The resource
``id`` is the record's sequence number in the access log.
"""

from __future__ import annotations

from typing import Any

from vault.audit_codes import VAULT_SCHEME, Code, action_code
from vault.audit_message import AuditMessage, AuditSource, Participant, ParticipantObject

SYSTEMS = {
    "DCM": "http://dicom.nema.org/resources/ontology/DCM",
    VAULT_SCHEME: "urn:dicom-vault:action",
}
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
NAMESPACE = "urn:dicom-vault"

Json = dict[str, Any]


def _coding(code: Code) -> Json:
    return {"system": SYSTEMS[code.scheme], "code": code.code, "display": code.meaning}


def _agent(participant: Participant) -> Json:
    agent: Json = {
        "who": {"identifier": {"system": f"{NAMESPACE}:actor", "value": participant.user_id}},
        "requestor": participant.requestor,
    }
    if participant.role is not None:
        agent["type"] = {"coding": [_coding(participant.role)]}
    if participant.network_id:
        agent["network"] = {
            "address": participant.network_id,
            "type": participant.network_type or "1",
        }
    return agent


def _source(source: AuditSource) -> Json:
    observed: Json = {
        "observer": {
            "identifier": {"system": f"{NAMESPACE}:audit-source", "value": source.source_id},
            "display": source.source_id,
        },
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    if source.site_id:
        observed["site"] = source.site_id
    return observed


def _entity(item: ParticipantObject) -> Json:
    kind = item.kind
    system = f"{NAMESPACE}:{item.object_type}"
    entity: Json = {
        "what": {"identifier": {"system": system, "value": item.object_id}},
        "type": {"system": ENTITY_TYPE, "code": kind.type_code},
        "description": kind.meaning,
    }
    if kind.role:
        entity["role"] = {"system": OBJECT_ROLE, "code": kind.role}
    if item.lifecycle:
        entity["lifecycle"] = {"system": LIFECYCLE, "code": item.lifecycle}
    if item.details:
        entity["detail"] = [{"type": name, "valueString": value} for name, value in item.details]
    return entity


def fhir_audit_event(message: AuditMessage) -> Json:
    """``message`` as a FHIR R4 AuditEvent resource (a JSON-ready dict)."""
    kind = message.kind
    subtypes = [*kind.types, action_code(message.action)]
    resource: Json = {
        "resourceType": "AuditEvent",
        "id": str(message.seq),
        "type": _coding(kind.event_id),
        "subtype": [_coding(code) for code in subtypes],
        "action": kind.action,
        "recorded": message.at.isoformat(timespec="microseconds"),
        "outcome": message.indicator,
        "agent": [_agent(p) for p in message.participants],
        "source": _source(message.source),
        "entity": [_entity(item) for item in message.objects],
    }
    if message.outcome_description is not None:
        resource["outcomeDesc"] = message.outcome_description
    return resource
