"""The catalog's upload tables: browser upload sessions, their files, held parts.

An :class:`Upload` is one batch of files a clinician sends for a case (one
page session); it is ``open`` until the uploader marks it ``complete`` (or
the sweep finds it ``abandoned``). Each :class:`UploadFile` is one tus upload
resource: a single DICOM file, a ZIP archive, a DICOMDIR index or OS junk,
with its declared length, the offset received so far and its outcome.
While a file arrives in several requests, what came so far is held
encrypted in the object store as :class:`UploadPart` rows (one encrypted
object each, under the file's own spool data key), deleted once the file is
finished, refused, terminated or swept. :class:`UploadInstance` records each
instance an upload stored (or found already stored), for its summary and
for settling its studies.

No PHI: no file name, description or UID is kept; refusal details are the
PHI-free messages of :mod:`vault.errors`. ``study_id`` and ``instance_id``
are plain columns, not foreign keys: they may outlive an erased study.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from vault.catalog.models import Base, UtcDateTime, new_id, utcnow

UPLOAD_STATES = ("open", "complete", "abandoned")
FILE_KINDS = ("dicom", "zip", "dicomdir", "junk")
FILE_STATES = ("receiving", "stored", "duplicate", "refused", "partial", "skipped")
FINISHED_STATES = frozenset(FILE_STATES) - {"receiving"}


class Upload(Base):
    """One batch of files sent for a case by one user."""

    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id"), index=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    state: Mapped[str] = mapped_column(String(20), default="open")
    # The declared lengths of its files, kept as they join or are withdrawn, so
    # that admitting a file costs one row read however many files came before.
    declared_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UploadFile(Base):
    """One tus upload resource of an upload and its outcome."""

    __tablename__ = "upload_files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    kind: Mapped[str] = mapped_column(String(12), default="dicom")
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(12), default="receiving")
    spool_key_id: Mapped[str | None] = mapped_column(String(64))
    stored: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    refused_count: Mapped[int] = mapped_column(Integer, default=0)
    # JSON list of {"entry", "error", "detail"} (PHI-free reasons), capped.
    refused: Mapped[str] = mapped_column(Text, default="[]")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UploadPart(Base):
    """Bytes ``[offset, offset + size)`` of a file, held as one encrypted object."""

    __tablename__ = "upload_parts"
    __table_args__ = (UniqueConstraint("file_id", "offset"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    file_id: Mapped[str] = mapped_column(ForeignKey("upload_files.id"), index=True)
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(String(128), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))


class UploadInstance(Base):
    """An instance an upload stored or found already stored."""

    __tablename__ = "upload_instances"
    __table_args__ = (UniqueConstraint("upload_id", "instance_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    file_id: Mapped[str] = mapped_column(String(32))
    instance_id: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[str] = mapped_column(String(32))


def upload_instance_ids(session: Session, upload_id: str) -> list[str]:
    """The ids of the instances ``upload_id`` stored or found already stored."""
    query = (
        select(UploadInstance.instance_id)
        .where(UploadInstance.upload_id == upload_id)
        .order_by(UploadInstance.instance_id)
    )
    return list(session.scalars(query))


def upload_study_ids(session: Session, upload_id: str) -> list[str]:
    """The ids of the studies ``upload_id`` touched."""
    query = (
        select(UploadInstance.study_id)
        .where(UploadInstance.upload_id == upload_id)
        .distinct()
        .order_by(UploadInstance.study_id)
    )
    return list(session.scalars(query))
