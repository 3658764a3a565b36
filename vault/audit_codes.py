"""What each access-log action means in the audit standards' terms.

Every action the vault records (``instance.store``, ``auth.login``...) maps to
an :class:`EventKind`: the DICOM Audit Message EventID and EventTypeCodes
(PS3.15 A.5, codes from PS3.16 CID 400-403, scheme ``DCM``), the
EventActionCode, the roles of the requestor and of the vault (CID 402), and
the data life-cycle stage of the objects involved. The same kinds feed the
IHE ATNA XML (:mod:`vault.audit_atna`) and the FHIR AuditEvent
(:mod:`vault.audit_fhir`) exports.

Each vault action is also sent as an extra EventTypeCode in the scheme
:data:`VAULT_SCHEME`, so a collector sees exactly what the vault recorded.
Actions not in the table fall back by prefix, then to Application Activity,
so an action added later still exports (and the export test names it).

:data:`OBJECT_KINDS` says how each kind of object (``study``, ``user``...)
is described as a participant object. Objects are named only by internal
identifiers: the ParticipantObjectIDTypeCode is a vault code (never 110180
"Study Instance UID"), because no DICOM UID or patient identifier ever
leaves the vault in an audit message.
"""

from __future__ import annotations

from dataclasses import dataclass

VAULT_SCHEME = "dicom-vault"


@dataclass(frozen=True)
class Code:
    """A coded value: code, coding scheme designator, code meaning."""

    code: str
    scheme: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# EventID (PS3.16 CID 400)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
AUDIT_LOG_USED = _dcm("110101", "Audit Log Used")
BEGIN_TRANSFER = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
STUDY_DELETED = _dcm("110105", "DICOM Study Deleted")
EXPORT = _dcm("110106", "Export")
NETWORK_ENTRY = _dcm("110108", "Network Entry")
ORDER_RECORD = _dcm("110109", "Order Record")
PATIENT_RECORD = _dcm("110110", "Patient Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")

# EventTypeCode (PS3.16 CID 401)
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
ATTACH = _dcm("110124", "Attach")
DETACH = _dcm("110125", "Detach")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
NETWORK_CONFIGURATION = _dcm("110128", "Network Configuration")
SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
RESTRICTED_FUNCTION = _dcm("110132", "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = _dcm("110133", "Audit Recording Stopped")
OBJECT_SECURITY_CHANGED = _dcm("110135", "Object Security Attributes Changed")
SECURITY_ROLES_CHANGED = _dcm("110136", "Security Roles Changed")
USER_SECURITY_CHANGED = _dcm("110137", "User security Attributes Changed")

# RoleIDCode (PS3.16 CID 402)
APPLICATION = _dcm("110150", "Application")
DESTINATION = _dcm("110152", "Destination Role ID")
SOURCE = _dcm("110153", "Source Role ID")
DESTINATION_MEDIA = _dcm("110154", "Destination Media")


@dataclass(frozen=True)
class EventKind:
    """How one vault action is told in an audit message.

    ``requestor_role`` is the RoleIDCode of the actor who asked for the
    action, ``vault_role`` the vault's own; ``lifecycle`` the
    ParticipantObjectDataLifeCycle of the objects (``None``: not stated).
    """

    event_id: Code
    types: tuple[Code, ...]
    action: str
    requestor_role: Code | None = None
    vault_role: Code = APPLICATION
    lifecycle: str | None = None


def _security(kind: Code, action: str) -> EventKind:
    return EventKind(SECURITY_ALERT, (kind,), action)


_RECEIVED = EventKind(INSTANCES_TRANSFERRED, (), "C", SOURCE, DESTINATION, "2")
_SENT = EventKind(INSTANCES_TRANSFERRED, (), "R", DESTINATION, SOURCE, "11")
_WITHDRAWN = EventKind(INSTANCES_TRANSFERRED, (), "D", SOURCE, DESTINATION, "14")
_LOGIN = EventKind(USER_AUTHENTICATION, (LOGIN,), "E")
_USER_CHANGE = _security(USER_SECURITY_CHANGED, "U")

EVENT_KINDS: dict[str, EventKind] = {
    # authentication (vault.auth.login)
    "auth.login": _LOGIN,
    "auth.password": _LOGIN,
    "auth.logout": EventKind(USER_AUTHENTICATION, (LOGOUT,), "E"),
    "auth.lockout": _USER_CHANGE,
    "auth.password-set": _USER_CHANGE,
    "auth.totp-enrol": _USER_CHANGE,
    # receiving studies (upload, C-STORE, CLI)
    "instance.store": _RECEIVED,
    "association": EventKind(NETWORK_ENTRY, (ATTACH,), "E", SOURCE, DESTINATION),
    "commitment.check": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
    # a storage-commitment report the PACS never acknowledged, out of attempts or time
    "commitment.give-up": EventKind(APPLICATION_ACTIVITY, (), "E", vault_role=SOURCE),
    "upload.create": EventKind(BEGIN_TRANSFER, (), "E", SOURCE, DESTINATION),
    "upload.file": _RECEIVED,
    "upload.complete": _RECEIVED,
    "upload.file.terminate": _WITHDRAWN,
    "upload.abandon": _WITHDRAWN,
    "upload.list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "upload.read": EventKind(ORDER_RECORD, (), "R", lifecycle="6"),
    # reading, downloading, exporting
    "instance.read": _SENT,
    "study.download": _SENT,
    "series.download": _SENT,
    "study.metadata": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
    "series.metadata": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
    "study.export": EventKind(EXPORT, (), "R", SOURCE, SOURCE, "10"),
    "case.read": EventKind(ORDER_RECORD, (), "R", lifecycle="6"),
    "case.list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "case.create": EventKind(ORDER_RECORD, (), "C", lifecycle="1"),
    "case.close": EventKind(ORDER_RECORD, (), "U"),
    "study.file": _security(OBJECT_SECURITY_CHANGED, "U"),  # who may reach it changes
    # de-identification and re-identification
    "study.deidentify": EventKind(INSTANCES_ACCESSED, (), "C", lifecycle="7"),
    "deidentify.offline": EventKind(INSTANCES_ACCESSED, (), "E", lifecycle="7"),
    "pseudonym.reidentify": EventKind(PATIENT_RECORD, (RESTRICTED_FUNCTION,), "R", lifecycle="11"),
    "thumbnail.read": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
    "dicomweb.search": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "study.list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "dicomweb.metadata": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
    "dicomweb.retrieve": _SENT,
    "dicomweb.frames": _SENT,
    "dicomweb.bulkdata": _SENT,
    # deletion, retention, holds
    "study.expire": EventKind(STUDY_DELETED, (), "D", lifecycle="15"),
    "study.erase": EventKind(STUDY_DELETED, (), "D", lifecycle="15"),
    "store.bypass-governance": _security(RESTRICTED_FUNCTION, "D"),
    "hold.place": _security(OBJECT_SECURITY_CHANGED, "C"),
    "hold.lift": _security(OBJECT_SECURITY_CHANGED, "U"),
    # keys
    "key.rotate": _security(SECURITY_CONFIGURATION, "C"),
    "key.rewrap": _security(SECURITY_CONFIGURATION, "U"),
    # administration (web pages and CLI)
    "admin.org-create": _security(SOFTWARE_CONFIGURATION, "C"),
    "admin.user-create": _security(USER_SECURITY_CHANGED, "C"),
    "admin.password-reset": _USER_CHANGE,
    "admin.user-disable": _USER_CHANGE,
    "admin.assign": _security(SECURITY_ROLES_CHANGED, "U"),
    "admin.issuer-add": _security(SOFTWARE_CONFIGURATION, "C"),
    "admin.issuer-remove": _security(SOFTWARE_CONFIGURATION, "D"),
    "admin.case-create": EventKind(ORDER_RECORD, (), "C", lifecycle="1"),
    "admin.pacs-create": _security(NETWORK_CONFIGURATION, "C"),
    "pacs.add": _security(NETWORK_CONFIGURATION, "C"),
    "pacs.update": _security(NETWORK_CONFIGURATION, "U"),
    "pacs.disable": _security(NETWORK_CONFIGURATION, "U"),
    "pacs.enable": _security(NETWORK_CONFIGURATION, "U"),
    "admin.pacs-disable": _security(NETWORK_CONFIGURATION, "U"),
    "admin.pacs-enable": _security(NETWORK_CONFIGURATION, "U"),
    "admin.view": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "admin.user-list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "token.list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "token.create": _security(USER_SECURITY_CHANGED, "C"),
    "token.revoke": _security(USER_SECURITY_CHANGED, "D"),
    # data-subject requests (vault.dsr) and the breach register (vault.breaches)
    "dsr.open": EventKind(PATIENT_RECORD, (), "C", lifecycle="1"),
    "dsr.list": EventKind(QUERY, (), "E", DESTINATION, SOURCE),
    "dsr.verify": EventKind(PATIENT_RECORD, (), "E", lifecycle="4"),
    "dsr.search": EventKind(QUERY, (), "E"),
    "dsr.export": EventKind(EXPORT, (), "R", SOURCE, SOURCE, "11"),
    "dsr.rectify": EventKind(PATIENT_RECORD, (), "U", lifecycle="3"),
    "dsr.restrict": _security(OBJECT_SECURITY_CHANGED, "U"),
    "dsr.lift-restriction": _security(OBJECT_SECURITY_CHANGED, "U"),
    "dsr.erase": EventKind(STUDY_DELETED, (), "D", lifecycle="15"),
    "dsr.extend": EventKind(PATIENT_RECORD, (), "U"),
    "dsr.close": EventKind(PATIENT_RECORD, (), "U"),
    "breach.record": EventKind(SECURITY_ALERT, (), "C"),
    "breach.update": EventKind(SECURITY_ALERT, (), "U"),
    "breach.entry": EventKind(SECURITY_ALERT, (), "U"),
    "breach.notify": EventKind(SECURITY_ALERT, (), "E"),
    "breach.close": EventKind(SECURITY_ALERT, (), "U"),
    # the access log itself
    "audit.checkpoint": EventKind(AUDIT_LOG_USED, (), "C"),
    "audit.purge": EventKind(AUDIT_LOG_USED, (), "D", lifecycle="15"),
    "audit.export": EventKind(AUDIT_LOG_USED, (), "R", lifecycle="10"),
    "audit.forward-drop": _security(AUDIT_RECORDING_STOPPED, "E"),
    # an identified caller refused (vault.api.refusals): a restricted function tried
    "request.refused": _security(RESTRICTED_FUNCTION, "E"),
}

# Actions added by features after this table: the family decides.
_BY_PREFIX: dict[str, EventKind] = {
    "auth.": _USER_CHANGE,
    "admin.": _security(SOFTWARE_CONFIGURATION, "U"),
    "key.": _security(SECURITY_CONFIGURATION, "E"),
    "hold.": _security(OBJECT_SECURITY_CHANGED, "U"),
    "audit.": EventKind(AUDIT_LOG_USED, (), "E"),
    "breach.": EventKind(SECURITY_ALERT, (), "E"),
    "dsr.": EventKind(PATIENT_RECORD, (RESTRICTED_FUNCTION,), "E"),
    "backup.": _security(SOFTWARE_CONFIGURATION, "E"),
    "upload.": _RECEIVED,
    "store.": _security(RESTRICTED_FUNCTION, "E"),
    "dicomweb.": EventKind(INSTANCES_ACCESSED, (), "R", lifecycle="6"),
}
_FALLBACK = EventKind(APPLICATION_ACTIVITY, (), "E")

# A C-STORE association is recorded when it opens and when it ends; a
# refused one (unknown AE title, bad certificate) is a node-authentication alert.
_ASSOCIATION_END = EventKind(NETWORK_ENTRY, (DETACH,), "E", SOURCE, DESTINATION)
_NODE_REFUSED = EventKind(SECURITY_ALERT, (NODE_AUTHENTICATION,), "E", SOURCE, DESTINATION)


def event_kind(action: str, outcome: str = "success") -> EventKind:
    """The audit-standard meaning of vault action ``action`` ending in ``outcome``."""
    if action == "association" and outcome in ("closed", "aborted"):
        return _ASSOCIATION_END
    if action == "association" and outcome.startswith("refused"):
        return _NODE_REFUSED
    if action in EVENT_KINDS:
        return EVENT_KINDS[action]
    for prefix, kind in _BY_PREFIX.items():
        if action.startswith(prefix):
            return kind
    return _FALLBACK


def action_code(action: str) -> Code:
    """The vault's own EventTypeCode naming ``action`` exactly."""
    return Code(action, VAULT_SCHEME, action)


# EventOutcomeIndicator: 0 nominal success, 4 minor failure, 8 serious failure.
_SUCCESSFUL = frozenset(
    {"success", "duplicate", "open", "closed", "locked", "not-modified", "headers-only"}
)
_SERIOUS = ("storage-unavailable", "error", "unavailable")


def outcome_indicator(outcome: str) -> str:
    """``0``, ``4`` or ``8`` for a recorded outcome (``success``, ``refused:...``)."""
    if outcome in _SUCCESSFUL:
        return "0"
    if any(word in outcome for word in _SERIOUS):
        return "8"
    return "4"


@dataclass(frozen=True)
class ObjectKind:
    """How a kind of vault object is described as a participant object.

    ``type_code``/``role`` are ParticipantObjectTypeCode and ...TypeCodeRole
    (1 person, 2 system object, 3 organisation; role 3 report, 4 resource,
    6 user, 11 security user entity, 13 security resource, 20 job).
    """

    meaning: str
    type_code: str
    role: str | None
    encrypted: bool = False
    anonymized: bool = False

    def id_type(self, object_type: str) -> Code:
        return Code(object_type, VAULT_SCHEME, self.meaning)


OBJECT_KINDS: dict[str, ObjectKind] = {
    "study": ObjectKind("Vault study id", "2", "3", encrypted=True),
    "series": ObjectKind("Vault series id", "2", "3", encrypted=True),
    "instance": ObjectKind("Vault instance id", "2", "3", encrypted=True),
    "pseudonymised-study": ObjectKind("Pseudonymised study id", "2", "3", True, True),
    "pseudonymised-series": ObjectKind("Pseudonymised series id", "2", "3", True, True),
    "pseudonymised-instance": ObjectKind("Pseudonymised instance id", "2", "3", True, True),
    "case": ObjectKind("Vault case id", "2", "20"),
    "organisation": ObjectKind("Vault organisation id", "3", None),
    "user": ObjectKind("Vault user id", "1", "11"),
    "token": ObjectKind("API token id", "2", "13"),
    "pacs_node": ObjectKind("PACS node id", "2", "4"),
    "kek": ObjectKind("Key-encryption key id", "2", "13"),
    "legal_hold": ObjectKind("Legal hold id", "2", "4"),
    "upload": ObjectKind("Upload session id", "2", "20"),
    "dsr": ObjectKind("Data-subject request id", "2", "20"),
    "breach": ObjectKind("Breach register entry id", "2", "4"),
    "audit-record": ObjectKind("Access-log record sequence number", "2", "13"),
}
_OTHER_OBJECT = ObjectKind("Vault object id", "4", None)


def object_kind(object_type: str) -> ObjectKind:
    """The participant-object description of ``object_type`` (``Other`` if unknown)."""
    return OBJECT_KINDS.get(object_type, _OTHER_OBJECT)
