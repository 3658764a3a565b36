"""The JSON manifest of an access or portability package: what the vault holds on a person.

:func:`build_manifest` describes every study matched to a request from the
catalog alone (nothing is decrypted here): its case and organisation, dates of
receipt, retention date, series and instances (with the package path, size
and SHA-256 of each file), whether it is restricted or under a legal hold, the
state of its pseudonymised copy and the pseudonym engineers know it by, and
every access-log record concerning the study, its instances or its copy
(when, what, outcome, and who by kind and role: staff are not named).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from vault.catalog.accounts import ApiToken, User
from vault.catalog.deid import PseudonymisedInstance, PseudonymisedStudy
from vault.catalog.dsr import DataSubjectRequest
from vault.catalog.models import AuditEvent, Case, Instance, Organisation, Series, Study
from vault.catalog.retention import LegalHold, Tombstone
from vault.dsr_restriction import restricted_ids

FORMAT = "dicom-vault-dsr-package/1"


@dataclass(frozen=True)
class PackageFile:
    """One original instance in the package: its path in the ZIP and its id."""

    path: str
    instance_id: str
    size: int


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _series(session: Session, study_id: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(Series).where(Series.study_id == study_id).order_by(Series.created_at, Series.id)
    )
    return [
        {
            "series_id": s.id,
            "modality": s.modality,
            "sop_class_uid": s.sop_class_uid,
            "instance_count": s.instance_count,
            "rows": s.rows,
            "columns": s.columns,
            "slice_thickness": s.slice_thickness,
            "pixel_spacing": s.pixel_spacing,
            "received_at": _iso(s.created_at),
        }
        for s in rows
    ]


def _files(session: Session, study_id: str) -> list[tuple[PackageFile, dict[str, Any]]]:
    rows = session.scalars(
        select(Instance)
        .where(Instance.study_id == study_id)
        .order_by(Instance.series_id, Instance.instance_number, Instance.id)
    )
    found = []
    for row in rows:
        item = PackageFile(f"studies/{study_id}/{row.series_id}/{row.id}.dcm", row.id, row.size)
        found.append(
            (
                item,
                {
                    "path": item.path,
                    "series_id": row.series_id,
                    "sop_class_uid": row.sop_class_uid,
                    "transfer_syntax_uid": row.transfer_syntax_uid,
                    "size": row.size,
                    "sha256": row.sha256,
                    "received_at": _iso(row.received_at),
                },
            )
        )
    return found


def _pseudonymisation(session: Session, study_id: str) -> dict[str, Any] | None:
    copy = session.scalar(select(PseudonymisedStudy).where(PseudonymisedStudy.study_id == study_id))
    if copy is None:
        return None
    return {
        "state": copy.state,
        "pseudonym": copy.pseudonym,
        "instance_count": copy.instance_count,
        "quarantined_count": copy.quarantined_count,
        "finished_at": _iso(copy.finished_at),
    }


def _held(session: Session, study: Study) -> bool:
    covers = [LegalHold.study_id == study.id]
    if study.case_id:
        covers.append(LegalHold.case_id == study.case_id)
    query = select(LegalHold.id).where(LegalHold.lifted_at.is_(None), or_(*covers))
    return session.scalar(query.limit(1)) is not None


def _study_entry(session: Session, study: Study, restricted: bool) -> dict[str, Any]:
    case = session.get(Case, study.case_id) if study.case_id else None
    organisation = session.get(Organisation, study.organisation_id)
    return {
        "study_id": study.id,
        "case_reference": case.reference if case else None,
        "organisation": organisation.name if organisation else None,
        "state": study.state,
        "received_at": _iso(study.received_at),
        "last_instance_at": _iso(study.last_instance_at),
        "settled_at": _iso(study.settled_at),
        "retention_until": _iso(study.expires_at),
        "instance_count": study.instance_count,
        "total_bytes": study.total_bytes,
        "restricted": restricted,
        "legal_hold": _held(session, study),
        "series": _series(session, study.id),
        "pseudonymisation": _pseudonymisation(session, study.id),
    }


def _targets(session: Session, study_ids: list[str]) -> dict[str, set[str]]:
    """The access-log objects concerning the studies: themselves, instances, copies."""
    instances = set(session.scalars(select(Instance.id).where(Instance.study_id.in_(study_ids))))
    copies = set(
        session.scalars(
            select(PseudonymisedStudy.id).where(PseudonymisedStudy.study_id.in_(study_ids))
        )
    )
    copy_instances = set(
        session.scalars(
            select(PseudonymisedInstance.id).where(
                PseudonymisedInstance.pseudo_study_id.in_(copies)
            )
        )
    )
    return {
        "study": set(study_ids),
        "instance": instances,
        "pseudonymised-study": copies,
        "pseudonymised-instance": copy_instances,
    }


def _who(session: Session, actor: str) -> dict[str, str | None]:
    """Who acted, by kind and role only (``user``/``token`` + role, ``pacs``, ``system``)."""
    kind, _, ident = actor.partition(":")
    user_id = ident if kind == "user" else None
    if kind == "token":
        user_id = session.scalar(select(ApiToken.user_id).where(ApiToken.id == ident))
    role = session.scalar(select(User.role).where(User.id == user_id)) if user_id else None
    return {"actor_kind": kind, "actor_role": role}


def _access_log(session: Session, study_ids: list[str]) -> list[dict[str, Any]]:
    clauses = [
        and_(AuditEvent.object_type == kind, AuditEvent.object_id.in_(sorted(ids)))
        for kind, ids in _targets(session, study_ids).items()
        if ids
    ]
    if not clauses:
        return []
    events = session.scalars(select(AuditEvent).where(or_(*clauses)).order_by(AuditEvent.seq))
    return [
        {
            "at": _iso(event.at),
            "action": event.action,
            "outcome": event.outcome,
            "object_type": event.object_type,
            "object_id": event.object_id,
            **_who(session, event.actor),
        }
        for event in events
    ]


def _erased(session: Session, study_ids: Iterable[str]) -> list[dict[str, Any]]:
    rows = session.scalars(select(Tombstone).where(Tombstone.study_id.in_(list(study_ids))))
    return [
        {"study_id": t.study_id, "reason": t.reason, "erased_at": _iso(t.expired_at)} for t in rows
    ]


def build_manifest(
    session: Session, request: DataSubjectRequest, study_ids: list[str], generated_at: datetime
) -> tuple[dict[str, Any], list[PackageFile]]:
    """The manifest of request ``request``'s package and the files it lists."""
    studies = list(session.scalars(select(Study).where(Study.id.in_(study_ids))))
    studies.sort(key=lambda s: (s.received_at, s.id))
    restricted = restricted_ids(session, [s.id for s in studies])
    entries, files = [], []
    for study in studies:
        entry = _study_entry(session, study, study.id in restricted)
        listed = _files(session, study.id)
        entry["files"] = [described for _, described in listed]
        files.extend(item for item, _ in listed)
        entries.append(entry)
    present = {s.id for s in studies}
    manifest = {
        "format": FORMAT,
        "request": {
            "reference": request.reference,
            "kind": request.kind,
            "received_at": _iso(request.received_at),
            "generated_at": _iso(generated_at),
        },
        "studies": entries,
        "erased_studies": _erased(session, [s for s in study_ids if s not in present]),
        "access_log": _access_log(session, sorted(present)) if present else [],
    }
    return manifest, files


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
