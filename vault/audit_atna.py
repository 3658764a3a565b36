"""DICOM Audit Messages (PS3.15 Annex A.5, the IHE ATNA format) from access-log records.

:func:`atna_xml` renders an :class:`~vault.audit_message.AuditMessage` as one
``<AuditMessage>`` document, elements in the order of the PS3.15 A.5.1
schema shipped in ``vault/schemas/dicom-audit-message.rng`` (the export
tests validate every kind of record against it). Object details are
base64-encoded, as the schema requires of ValuePair values.
"""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET

from vault.audit_codes import Code, action_code
from vault.audit_message import AuditMessage, AuditSource, Participant, ParticipantObject

# RFC 3881 audit source type 4: application server process.
APPLICATION_SERVER = Code("4", "RFC-3881", "Application Server Process")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _child(
    parent: ET.Element, tag: str, attributes: dict[str, str] | None = None, text: str | None = None
) -> ET.Element:
    """A child element; characters XML 1.0 cannot carry become U+FFFD."""
    clean = {name: _NOT_XML.sub("\ufffd", value) for name, value in (attributes or {}).items()}
    element = ET.SubElement(parent, tag, clean)
    if text is not None:
        element.text = _NOT_XML.sub("\ufffd", text)
    return element


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return _child(
        parent,
        tag,
        {"csd-code": code.code, "codeSystemName": code.scheme, "originalText": code.meaning},
    )


def _event(root: ET.Element, message: AuditMessage) -> None:
    kind = message.kind
    event = _child(
        root,
        "EventIdentification",
        {
            "EventActionCode": kind.action,
            "EventDateTime": message.at.isoformat(timespec="microseconds"),
            "EventOutcomeIndicator": message.indicator,
        },
    )
    _coded(event, "EventID", kind.event_id)
    for code in (*kind.types, action_code(message.action)):
        _coded(event, "EventTypeCode", code)
    if message.outcome_description is not None:
        _child(event, "EventOutcomeDescription", text=message.outcome_description)


def _participant(root: ET.Element, participant: Participant) -> None:
    attributes = {
        "UserID": participant.user_id,
        "UserIsRequestor": "true" if participant.requestor else "false",
    }
    if participant.network_id:
        attributes["NetworkAccessPointID"] = participant.network_id
        attributes["NetworkAccessPointTypeCode"] = participant.network_type or "1"
    element = _child(root, "ActiveParticipant", attributes)
    if participant.role is not None:
        _coded(element, "RoleIDCode", participant.role)


def _source(root: ET.Element, source: AuditSource) -> None:
    attributes = {"AuditSourceID": source.source_id}
    if source.site_id:
        attributes["AuditEnterpriseSiteID"] = source.site_id
    element = _child(root, "AuditSourceIdentification", attributes)
    _coded(element, "AuditSourceTypeCode", APPLICATION_SERVER)


def _object(root: ET.Element, item: ParticipantObject) -> None:
    kind = item.kind
    attributes = {
        "ParticipantObjectID": item.object_id,
        "ParticipantObjectTypeCode": kind.type_code,
    }
    if kind.role:
        attributes["ParticipantObjectTypeCodeRole"] = kind.role
    if item.lifecycle:
        attributes["ParticipantObjectDataLifeCycle"] = item.lifecycle
    element = _child(root, "ParticipantObjectIdentification", attributes)
    _coded(element, "ParticipantObjectIDTypeCode", kind.id_type(item.object_type))
    for name, value in item.details:
        encoded = base64.b64encode(value.encode()).decode("ascii")
        _child(element, "ParticipantObjectDetail", {"type": name, "value": encoded})
    if kind.encrypted:
        _child(element, "Encrypted", text="true")
    if kind.anonymized:
        _child(element, "Anonymized", text="true")


def atna_element(message: AuditMessage) -> ET.Element:
    """The ``<AuditMessage>`` element of ``message``."""
    root = ET.Element("AuditMessage")
    _event(root, message)
    for participant in message.participants:
        _participant(root, participant)
    _source(root, message.source)
    for item in message.objects:
        _object(root, item)
    return root


def atna_xml(message: AuditMessage) -> str:
    """``message`` as one DICOM Audit Message document on one line (no declaration)."""
    return ET.tostring(atna_element(message), encoding="unicode")
