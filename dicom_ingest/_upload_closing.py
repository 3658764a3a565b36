"""How uploads end: completed by their uploader, or swept once abandoned.

:func:`complete_upload` discards the files still arriving, marks the upload
complete, records ``upload.complete`` (files counted by outcome, no PHI) and
settles every study the upload touched (:func:`vault.settle.settle_study`,
whose listeners start de-identification). :func:`sweep_abandoned_uploads`
closes open uploads idle for ``uploads.abandon_after_hours`` (the daily job
runs it), discarding their files still arriving. Discarding a file drops its
held parts, destroys its spool key and deletes its row; what was stored stays.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from dicom_ingest._upload_admission import declare
from dicom_ingest._upload_spool import drop_held
from dicom_ingest._upload_status import upload_status
from vault.audit import AuditRecord
from vault.catalog.uploads import Upload, UploadFile, upload_study_ids
from vault.core import Vault
from vault.errors import NotFound
from vault.settle import StudySettledHooks, settle_study

log = logging.getLogger("dicom_ingest.uploads")


def receiving_files(
    vault: Vault, upload_id: str, *, idle_since: datetime | None = None
) -> list[str]:
    """The upload's files still arriving (only those idle since ``idle_since`` if given)."""
    query = select(UploadFile.id).where(
        UploadFile.upload_id == upload_id, UploadFile.state == "receiving"
    )
    if idle_since is not None:
        query = query.where(UploadFile.updated_at < idle_since)
    with vault.catalog.read_session() as session:
        return list(session.scalars(query))


def discard_files(vault: Vault, file_ids: list[str]) -> int:
    """Drop files still arriving: their held parts, spool keys and rows. The count."""
    drop_held(vault, file_ids)
    if not file_ids:
        return 0
    withdrawn = (
        delete(UploadFile)
        .where(UploadFile.id.in_(file_ids), UploadFile.state == "receiving")
        .returning(UploadFile.upload_id, UploadFile.length)
    )
    with vault.catalog.session() as session:
        gone = session.execute(withdrawn).all()
        for upload_id, length in gone:
            session.execute(declare(upload_id, -length))
        return len(gone)


def complete_upload(
    vault: Vault,
    upload_id: str,
    *,
    actor: str,
    remote: str | None,
    hooks: StudySettledHooks | None,
) -> list[str]:
    """Complete the open upload ``upload_id`` (see module docstring); its study ids."""
    discarded = discard_files(vault, receiving_files(vault, upload_id))
    with vault.catalog.session() as session:
        upload = session.get(Upload, upload_id)
        if upload is None:
            raise NotFound("no such upload")
        now = vault.clock.now()
        upload.state, upload.completed_at, upload.updated_at = "complete", now, now
        studies = upload_study_ids(session, upload_id)
        counts = upload_status(session, upload).files
        vault.audit.record(
            AuditRecord(
                actor=actor,
                action="upload.complete",
                object_type="upload",
                object_id=upload_id,
                remote=remote,
                detail={**counts, "discarded": discarded, "studies": len(studies)},
            ),
            session=session,
        )
    states = ", ".join(f"{n} {state}" for state, n in counts.items() if n and state != "total")
    log.info(
        "upload %s completed: %d files (%s); %d discarded; %d studies",
        upload_id,
        counts.get("total", 0),
        states or "none",
        discarded,
        len(studies),
    )
    for study_id in studies:
        try:
            settle_study(vault, study_id, hooks)
        except NotFound:
            continue  # erased meanwhile
    return studies


def sweep_abandoned_uploads(vault: Vault) -> int:
    """Close open uploads idle for ``uploads.abandon_after_hours``; how many.

    Their files still arriving are discarded (held parts deleted, spool keys
    destroyed); what they stored stays. Each is recorded as ``upload.abandon``.
    """
    idle = timedelta(hours=vault.settings.uploads.abandon_after_hours)
    cutoff = vault.clock.now() - idle
    with vault.catalog.read_session() as session:
        query = select(Upload.id).where(Upload.state == "open", Upload.updated_at < cutoff)
        stale = list(session.scalars(query))
    for upload_id in stale:
        discarded = discard_files(vault, receiving_files(vault, upload_id, idle_since=cutoff))
        with vault.catalog.session() as session:
            closed = session.execute(
                update(Upload)
                .where(Upload.id == upload_id, Upload.state == "open", Upload.updated_at < cutoff)
                .values(state="abandoned", updated_at=vault.clock.now())
            )
            if closed.rowcount:  # type: ignore[attr-defined]
                vault.audit.record(
                    AuditRecord(
                        actor="system",
                        action="upload.abandon",
                        object_type="upload",
                        object_id=upload_id,
                        detail={"discarded": discarded},
                    ),
                    session=session,
                )
                log.info(
                    "upload %s abandoned: idle for %s; %d discarded", upload_id, idle, discarded
                )
    return len(stale)
