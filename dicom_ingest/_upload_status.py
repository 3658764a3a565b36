"""What the upload API reports about uploads and files (plain values, no ORM rows).

:class:`FileStatus` is one tus upload resource: its declared length, the
offset received, its state and, once finished, what it stored and why
anything was refused. :class:`UploadStatus` is an upload with its files
counted by state. Statuses are built from catalog rows, or, right after a
request, from what the request did (:func:`status_after`), which saves
reading back what was just written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dicom_ingest._upload_receive import MAX_REFUSALS_KEPT, Received, Target
from vault.catalog.uploads import FILE_STATES, Upload, UploadFile


@dataclass(frozen=True)
class FileStatus:
    """One file of an upload, as the API reports it (``error``: why it was refused)."""

    file_id: str
    upload_id: str
    kind: str
    length: int
    offset: int
    state: str
    stored: int = 0
    duplicates: int = 0
    refused: tuple[dict[str, object], ...] = ()
    error: Exception | None = None

    @property
    def finished(self) -> bool:
        return self.state != "receiving"


@dataclass(frozen=True)
class UploadStatus:
    upload_id: str
    case_id: str
    state: str
    files: dict[str, int]
    bytes_received: int


def file_status(row: UploadFile) -> FileStatus:
    """The status of the file in catalog row ``row``."""
    return FileStatus(
        file_id=row.id,
        upload_id=row.upload_id,
        kind=row.kind,
        length=row.length,
        offset=row.offset,
        state=row.state,
        stored=row.stored,
        duplicates=row.duplicates,
        refused=tuple(json.loads(row.refused or "[]")),
    )


def status_after(target: Target, received: Received) -> FileStatus:
    """The file's status after a request, from what the request did (no catalog read)."""
    outcome = received.outcome
    if outcome is None:
        return FileStatus(
            target.file_id,
            target.upload_id,
            target.kind,
            target.length,
            received.offset,
            "receiving",
        )
    return FileStatus(
        file_id=target.file_id,
        upload_id=target.upload_id,
        kind=target.kind,
        length=target.length,
        offset=target.length,
        state=outcome.state,
        stored=outcome.stored,
        duplicates=outcome.duplicates,
        refused=tuple(refusal.as_dict() for refusal in outcome.refused[:MAX_REFUSALS_KEPT]),
        error=outcome.error,
    )


def upload_status(session: Session, upload: Upload) -> UploadStatus:
    """``upload`` with its files counted by state and the bytes received."""
    rows = session.execute(
        select(UploadFile.state, func.count(), func.coalesce(func.sum(UploadFile.offset), 0))
        .where(UploadFile.upload_id == upload.id)
        .group_by(UploadFile.state)
    ).all()
    files = dict.fromkeys(("total", *FILE_STATES), 0)
    for state, count, _ in rows:
        files[state] = count
        files["total"] += count
    received = sum(int(total) for _, _, total in rows)
    return UploadStatus(upload.id, upload.case_id, upload.state, files, received)
