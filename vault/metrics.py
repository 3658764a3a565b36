"""The operators' figures: what the catalog holds, in the Prometheus text format.

:func:`collect` counts, at each scrape, what the catalog holds: studies and
their instances and plaintext bytes by state, shredded studies, legal holds,
de-identification progress, uploads, PACS nodes and their storage-commitment
reports, accounts and live API tokens, data-subject requests and breaches
against their deadlines (on the vault's clock), and the access log's chain head and newest signed
checkpoint. The figures come from the catalog, never from counters kept in
memory, so every API process of a deployment answers the same, whatever the
number of API, receiver and worker processes.

Each figure is one aggregate (COUNT or SUM, grouped by a state column) over
a table of business objects (studies, uploads, users...), never over the big
tables: instances and bytes are the studies' own counters, files are counted
for open uploads only (through the ``upload_id`` index), and the access log
is read at its head (``max(seq)``, its key) and in its small checkpoint table.

:func:`exposition` writes families in the text exposition format 0.0.4.
Label values are fixed words only (states, roles, scopes, reasons): a value
in the catalog outside a family's words is counted as ``other``, so no
identifier, reference, name or UID can reach a label. Values are escaped
anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, case, func, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from vault.auth.tokens import SCOPES
from vault.breaches import NOTIFY_AUTHORITY_WITHIN
from vault.catalog.accounts import ROLES, ApiToken, User
from vault.catalog.breaches import Breach
from vault.catalog.commitments import REPORT_STATES, CommitmentTransaction
from vault.catalog.deid import STUDY_STATES as PSEUDONYMISED_STATES
from vault.catalog.deid import PseudonymisedStudy
from vault.catalog.dsr import OPEN_STATES, DataSubjectRequest
from vault.catalog.key_periods import DATA_NAMESPACE, ENVELOPE_NAMESPACE, PendingDeletion
from vault.catalog.models import AuditEvent, PacsNode, Series, Study
from vault.catalog.retention import AuditCheckpoint, LegalHold, Tombstone
from vault.catalog.uploads import FILE_STATES, UPLOAD_STATES, Upload, UploadFile, UploadPart
from vault.core import Vault
from vault.errors import StorageUnavailable
from vault.retention import ERASED, EXPIRED
from vault.settle import RECEIVING, SETTLED

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "dicom_vault_"
OTHER = "other"  # the label value of anything outside a family's fixed words
STUDY_STATES = (RECEIVING, SETTLED)
SHRED_REASONS = (EXPIRED, ERASED)
ENABLED = ("enabled", "disabled")
DEADLINE = ("open", "passed")


@dataclass(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass(frozen=True)
class Family:
    """One metric family: its name (without the prefix), type, help and samples."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: tuple[Sample, ...]


def single(name: str, help_: str, value: float, *, kind: str = "gauge") -> Family:
    """A family of one unlabelled sample."""
    return Family(name, kind, help_, (Sample((), value),))


def by_word(
    name: str,
    help_: str,
    label: str,
    words: Iterable[str],
    counts: Mapping[Any, float],
    *,
    kind: str = "gauge",
) -> Family:
    """One sample per fixed word of ``label`` (zero when absent); counts under
    any other key are summed into ``other``, shown only when there are some."""
    known = tuple(words)
    samples = [Sample(((label, word),), counts.get(word, 0)) for word in known]
    stray = sum(value for key, value in counts.items() if key not in known)
    if stray:
        samples.append(Sample(((label, OTHER),), stray))
    return Family(name, kind, help_, tuple(samples))


def _tally(session: Session, query: Select[Any]) -> dict[Any, int]:
    """``{group: figure}`` of a two-column grouped query (PostgreSQL sums are Decimal)."""
    return {group: int(figure) for group, figure in session.execute(query)}


def _column(rows: Iterable[Row[Any]], index: int) -> dict[Any, int]:
    return {row[0]: int(row[index]) for row in rows}


def _count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# --- stored data --------------------------------------------------------------------


def _studies(session: Session, _now: datetime) -> list[Family]:
    query = select(
        Study.state,
        func.count(),
        func.coalesce(func.sum(Study.instance_count), 0),
        func.coalesce(func.sum(Study.total_bytes), 0),
    ).group_by(Study.state)
    rows = session.execute(query).all()
    series = session.scalar(select(func.count()).select_from(Series)) or 0
    by_study = "by the state of their study (receiving, or settled once complete)"
    return [
        by_word("studies", "Stored studies, by state.", "state", STUDY_STATES, _column(rows, 1)),
        single("series", "Series of the stored studies.", series),
        by_word(
            "instances", f"Stored instances, {by_study}.", "state", STUDY_STATES, _column(rows, 2)
        ),
        by_word(
            "stored_plaintext_bytes",
            f"Plaintext bytes of the stored instances, {by_study}.",
            "state",
            STUDY_STATES,
            _column(rows, 3),
        ),
    ]


def _held(session: Session, _now: datetime) -> list[Family]:
    active = LegalHold.lifted_at.is_(None)
    target = case((LegalHold.case_id.is_not(None), "case"), else_="study")
    holds = _tally(session, select(target, func.count()).where(active).group_by(target))
    studies = plaintext = 0
    if holds:  # else nothing is held: no need to look at the studies
        cases = select(LegalHold.case_id).where(active, LegalHold.case_id.is_not(None))
        named = select(LegalHold.study_id).where(active, LegalHold.study_id.is_not(None))
        query = select(func.count(), func.coalesce(func.sum(Study.total_bytes), 0)).where(
            or_(Study.case_id.in_(cases), Study.id.in_(named))
        )
        studies, plaintext = (int(figure) for figure in session.execute(query).one())
    return [
        by_word(
            "legal_holds",
            "Active legal holds, by what they name.",
            "target",
            ("case", "study"),
            holds,
        ),
        single(
            "studies_under_legal_hold",
            "Stored studies an active legal hold covers (they do not expire).",
            studies,
        ),
        single(
            "stored_plaintext_bytes_under_legal_hold",
            "Plaintext bytes of the stored studies an active legal hold covers.",
            plaintext,
        ),
    ]


def _shredded(session: Session, _now: datetime) -> list[Family]:
    tombstones = select(Tombstone.reason, func.count()).group_by(Tombstone.reason)
    pending = select(PendingDeletion.namespace, func.count()).group_by(PendingDeletion.namespace)
    return [
        by_word(
            "studies_shredded_total",
            "Studies crypto-shredded (a tombstone left), by reason: expired or erased.",
            "reason",
            SHRED_REASONS,
            _tally(session, tombstones),
            kind="counter",
        ),
        by_word(
            "pending_object_deletions",
            "Objects of shredded studies still to delete from the object store, by kind.",
            "kind",
            (DATA_NAMESPACE, ENVELOPE_NAMESPACE),
            _tally(session, pending),
        ),
    ]


def _pseudonymised(session: Session, _now: datetime) -> list[Family]:
    query = select(
        PseudonymisedStudy.state,
        func.count(),
        func.coalesce(func.sum(PseudonymisedStudy.instance_count), 0),
        func.coalesce(func.sum(PseudonymisedStudy.quarantined_count), 0),
    ).group_by(PseudonymisedStudy.state)
    rows = session.execute(query).all()
    instances = {"done": sum(r[2] for r in rows), "quarantined": sum(r[3] for r in rows)}
    return [
        by_word(
            "pseudonymised_studies",
            "Studies queued for or through de-identification, by state.",
            "state",
            PSEUDONYMISED_STATES,
            _column(rows, 1),
        ),
        by_word(
            "pseudonymised_instances",
            "Instances de-identified (done) or held back (quarantined).",
            "state",
            ("done", "quarantined"),
            {state: int(count) for state, count in instances.items()},
        ),
    ]


# --- uploads, senders, accounts -------------------------------------------------------


def _uploads(session: Session, _now: datetime) -> list[Family]:
    uploads = select(Upload.state, func.count()).group_by(Upload.state)
    files = (
        select(UploadFile.state, func.count())
        .join(Upload, Upload.id == UploadFile.upload_id)
        .where(Upload.state == "open")
        .group_by(UploadFile.state)
    )
    spooled = session.scalar(select(func.coalesce(func.sum(UploadPart.size), 0))) or 0
    return [
        by_word(
            "uploads",
            "Browser uploads, by state.",
            "state",
            UPLOAD_STATES,
            _tally(session, uploads),
        ),
        by_word(
            "open_upload_files",
            "Files of the open uploads, by state.",
            "state",
            FILE_STATES,
            _tally(session, files),
        ),
        single(
            "upload_spooled_bytes",
            "Bytes of files still arriving, held encrypted until their file is complete.",
            int(spooled),
        ),
    ]


def _enabled(disabled: bool) -> str:
    return "disabled" if disabled else "enabled"


def _users(session: Session) -> Family:
    query = select(User.role, User.disabled, func.count()).group_by(User.role, User.disabled)
    counts: dict[tuple[str, str], int] = {}
    for role, disabled, count in session.execute(query):
        key = (role if role in ROLES else OTHER, _enabled(disabled))
        counts[key] = counts.get(key, 0) + int(count)
    keys = [(role, state) for role in ROLES for state in ENABLED]
    keys += sorted(key for key in counts if key[0] == OTHER)
    samples = tuple(
        Sample((("role", role), ("state", state)), counts.get((role, state), 0))
        for role, state in keys
    )
    return Family("users", "gauge", "User accounts, by role and state.", samples)


def _accounts(session: Session, now: datetime) -> list[Family]:
    nodes = select(PacsNode.enabled, func.count()).group_by(PacsNode.enabled)
    reports = select(CommitmentTransaction.state, func.count()).group_by(
        CommitmentTransaction.state
    )
    live = (
        select(ApiToken.scope, func.count())
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.revoked_at.is_(None), ApiToken.expires_at > now, User.disabled.is_(False))
        .group_by(ApiToken.scope)
    )
    return [
        by_word(
            "pacs_nodes",
            "PACS nodes allowed to send over DICOM, by state.",
            "state",
            ENABLED,
            {_enabled(not enabled): count for enabled, count in _tally(session, nodes).items()},
        ),
        by_word(
            "commitment_reports",
            "Storage-commitment reports by state: pending (being retried), reported or "
            "given up (those two for scp.commitment_remember_days).",
            "state",
            REPORT_STATES,
            _tally(session, reports),
        ),
        _users(session),
        by_word(
            "api_tokens_live",
            "API tokens neither expired nor revoked, of enabled users, by scope.",
            "scope",
            SCOPES,
            _tally(session, live),
        ),
    ]


# --- deadlines and the access log ------------------------------------------------------


def _deadlines(session: Session, now: datetime) -> list[Family]:
    is_open = DataSubjectRequest.state.in_(sorted(OPEN_STATES))
    requests = select(func.count(), _count_where(DataSubjectRequest.due_at < now)).where(is_open)
    open_requests, overdue = session.execute(requests).one()
    undecided = (
        (Breach.state == "open")
        & Breach.authority_notified_at.is_(None)
        & Breach.authority_exemption.is_(None)
    )
    passed = Breach.detected_at < now - NOTIFY_AUTHORITY_WITHIN
    breaches = select(
        _count_where(Breach.state == "open"),
        _count_where(undecided & ~passed),
        _count_where(undecided & passed),
    )
    open_breaches, within, late = (int(n) for n in session.execute(breaches).one())
    return [
        single(
            "data_subject_requests_open",
            "Data-subject requests received and not closed.",
            int(open_requests),
        ),
        single(
            "data_subject_requests_overdue",
            "Open data-subject requests past their due date.",
            int(overdue),
        ),
        single("breaches_open", "Breaches in the register not closed.", open_breaches),
        by_word(
            "breaches_awaiting_notification",
            "Open breaches without a decision on notifying the supervisory authority, "
            "by whether its 72-hour deadline is still open or has passed.",
            "deadline",
            DEADLINE,
            {"open": within, "passed": late},
        ),
    ]


def _access_log(session: Session, now: datetime) -> list[Family]:
    head = session.scalar(select(func.max(AuditEvent.seq))) or 0
    newest = select(func.max(AuditCheckpoint.seq), func.max(AuditCheckpoint.at))
    pinned_seq, pinned_at = session.execute(newest).one()
    age = math.inf if pinned_at is None else (now - pinned_at).total_seconds()
    return [
        single(
            "audit_records_total",
            "Access-log records ever appended: the sequence number of the chain head.",
            head,
            kind="counter",
        ),
        single(
            "audit_records_after_checkpoint",
            "Access-log records after the newest signed checkpoint (the hash chain alone "
            "protects them).",
            head - (pinned_seq or 0),
        ),
        single(
            "audit_checkpoint_age_seconds",
            "Seconds since the newest signed access-log checkpoint (+Inf when there is none).",
            age,
        ),
    ]


# --- the whole ---------------------------------------------------------------------------


@cache
def build_version() -> str:
    """The installed version of the ``dicom-vault`` distribution."""
    try:
        return version("dicom-vault")
    except PackageNotFoundError:
        return "unknown"


def _service() -> list[Family]:
    info = Sample((("version", build_version()),), 1)
    return [
        single("up", "The service answers and its catalog can be read.", 1),
        Family("build_info", "gauge", "The running dicom-vault version (always 1).", (info,)),
    ]


Collector = Callable[[Session, datetime], list[Family]]
COLLECTORS: tuple[Collector, ...] = (
    _studies,
    _held,
    _shredded,
    _pseudonymised,
    _uploads,
    _accounts,
    _deadlines,
    _access_log,
)


def collect(vault: Vault) -> list[Family]:
    """Every family, counted now in one read-only transaction of the catalog.

    Raises:
        StorageUnavailable: the catalog could not be read.
    """
    now = vault.clock.now()
    families = _service()
    try:
        with vault.catalog.read_session() as session:
            for collector in COLLECTORS:
                families.extend(collector(session, now))
    except SQLAlchemyError as exc:
        raise StorageUnavailable("the catalog cannot be read") from exc
    return families


# --- the text format -----------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value escaped for the text format: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the text format writes it: integers without a point, +Inf, NaN."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def _sample_line(name: str, sample: Sample) -> str:
    if not sample.labels:
        return f"{name} {format_value(sample.value)}"
    labels = ",".join(f'{key}="{escape_label(value)}"' for key, value in sample.labels)
    return f"{name}{{{labels}}} {format_value(sample.value)}"


def exposition(families: Iterable[Family]) -> str:
    """The families in the Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for family in families:
        name = PREFIX + family.name
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        lines.extend(_sample_line(name, sample) for sample in family.samples)
    return "\n".join(lines) + "\n"
