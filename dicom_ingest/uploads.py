"""Browser uploads: upload sessions, their files, offsets, resuming and completion.

An *upload* is one batch of files a clinician sends for a case; each *file*
is one tus upload resource with a declared length and the offset received
so far (see :mod:`vault.catalog.uploads`). :class:`Uploads` is the whole of
it for the web layer, which only adapts HTTP (:mod:`dicom_ingest.upload_api`):

- an upload is reached only by the user who opened it, and only while its
  case is within their reach for ``upload`` (:func:`find_upload`); anything
  else is "not found";
- size limits are checked up front from the declared lengths (per file
  ``limits.max_file_bytes``, per upload ``limits.max_upload_bytes``) and
  again while the bytes stream (:mod:`dicom_ingest._upload_admission`);
- bytes go through :class:`dicom_ingest._upload_receive.Receiver` into the
  one ingest pipeline; what waits for a later request is held encrypted;
- completing an upload discards files still arriving, settles the studies
  it touched (which starts de-identification) and is recorded in the access
  log, as are creating an upload, withdrawing a file and the sweep of
  abandoned uploads (:mod:`dicom_ingest._upload_closing`, run daily).

No file name, description or UID is stored or logged.
"""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom_ingest._upload_admission import (
    admit,
    admit_whole,
    declare,
    find_upload,
    open_upload,
    origin_of,
)
from dicom_ingest._upload_closing import (
    complete_upload,
    discard_files,
    sweep_abandoned_uploads,
)
from dicom_ingest._upload_receive import Receiver, Target
from dicom_ingest._upload_status import (
    FileStatus,
    UploadStatus,
    file_status,
    status_after,
    upload_status,
)
from dicom_ingest.pipeline import IngestOrigin, IngestPipeline
from dicom_ingest.sources import is_dicomdir_name, is_junk
from dicom_ingest.validation import ValidationPolicy
from vault.audit import AuditRecord
from vault.auth.permissions import CaseAction, Principal, can_access_case
from vault.case_rules import require_open
from vault.catalog.models import Case, new_id
from vault.catalog.uploads import Upload, UploadFile, upload_study_ids
from vault.core import Vault
from vault.errors import BadRequest, NotFound, OffsetMismatch, UploadClosed
from vault.settle import StudySettledHooks

__all__ = [
    "FileStatus",
    "UploadStatus",
    "Uploads",
    "file_kind",
    "find_upload",
    "sweep_abandoned_uploads",
]

KINDS = ("dicom", "zip", "dicomdir")


def file_kind(declared: str | None, filename: str | None) -> str:
    """The kind of a new file: the declared one, or what its name says it is.

    The name is looked at here only, never stored.

    Raises:
        BadRequest: an unknown kind.
    """
    if declared is not None and declared not in KINDS:
        raise BadRequest("the upload kind must be dicom, zip or dicomdir")
    if filename and is_dicomdir_name(filename):
        return "dicomdir"
    if filename and is_junk(filename):
        return "junk"
    return declared or "dicom"


class Uploads:
    """Upload sessions and their files for one vault (see module docstring)."""

    def __init__(self, vault: Vault, hooks: StudySettledHooks | None = None) -> None:
        self._vault = vault
        self._hooks = hooks
        policy = ValidationPolicy.from_settings(vault.settings.policy)
        self._receiver = Receiver(vault, IngestPipeline(vault, policy))

    @property
    def vault(self) -> Vault:
        return self._vault

    # --- uploads -------------------------------------------------------------

    def create(self, principal: Principal, case_id: str, remote: str | None) -> UploadStatus:
        """Open a new upload for ``case_id``. Raises NotFound for a case out of reach."""
        with self._vault.catalog.session() as session:
            case = session.get(Case, case_id)
            if case is None or not can_access_case(
                principal, case_id, CaseAction.UPLOAD, session=session
            ):
                raise NotFound("no such case")
            require_open(case)
            now = self._vault.clock.now()
            upload = Upload(
                case_id=case_id,
                organisation_id=case.organisation_id,
                user_id=principal.user_id,
                actor=principal.actor,
                created_at=now,
                updated_at=now,
            )
            session.add(upload)
            session.flush()
            self._vault.audit.record(
                AuditRecord(
                    actor=principal.actor,
                    action="upload.create",
                    object_type="upload",
                    object_id=upload.id,
                    remote=remote,
                    detail={"case": case_id},
                ),
                session=session,
            )
            return upload_status(session, upload)

    def list_open(self, principal: Principal, case_id: str) -> list[UploadStatus]:
        """The caller's open uploads for ``case_id``, oldest first."""
        with self._vault.catalog.read_session() as session:
            if not can_access_case(principal, case_id, CaseAction.UPLOAD, session=session):
                raise NotFound("no such case")
            query = (
                select(Upload)
                .where(
                    Upload.case_id == case_id,
                    Upload.user_id == principal.user_id,
                    Upload.state == "open",
                )
                .order_by(Upload.created_at)
            )
            return [upload_status(session, upload) for upload in session.scalars(query)]

    def status(self, principal: Principal, upload_id: str) -> UploadStatus:
        with self._vault.catalog.read_session() as session:
            return upload_status(session, find_upload(session, principal, upload_id))

    def complete(self, principal: Principal, upload_id: str, remote: str | None) -> list[str]:
        """Mark the upload complete and settle its studies; their ids.

        Files still arriving are discarded. Completing twice changes nothing.
        """
        with self._vault.catalog.read_session() as session:
            upload = find_upload(session, principal, upload_id)
            if upload.state == "complete":
                return upload_study_ids(session, upload_id)
            if upload.state != "open":
                raise UploadClosed("this upload was abandoned; start a new one")
        return complete_upload(
            self._vault, upload_id, actor=principal.actor, remote=remote, hooks=self._hooks
        )

    # --- files ---------------------------------------------------------------

    def add_file(self, principal: Principal, upload_id: str, length: int, kind: str) -> FileStatus:
        """A new file of ``length`` bytes in an open upload.

        Raises:
            TooLarge: the file, or the upload with it, is over its limit.
            UploadClosed: the upload is complete.
        """
        return file_status(self._add_file(principal, upload_id, length, kind)[0])

    def add_file_and_receive(
        self,
        principal: Principal,
        upload_id: str,
        length: int,
        kind: str,
        *,
        body: BinaryIO,
        body_length: int | None,
        remote: str | None,
    ) -> FileStatus:
        """A new file, and its first bytes from ``body`` (tus creation-with-upload).

        A file sent whole is checked, ingested, then recorded with its outcome
        in one write; any other is recorded first, so that it can be resumed.
        """
        if self._receiver.takes_whole(kind, length, body_length):
            origin = admit_whole(self._vault, principal, upload_id, length, kind, remote)
            target = Target(new_id(), upload_id, kind, length, 0, origin, recorded=False)
        else:
            row, origin = self._add_file(principal, upload_id, length, kind, remote)
            target = Target(row.id, upload_id, kind, length, 0, origin)
        return status_after(target, self._receiver.receive(target, body, body_length))

    def _add_file(
        self,
        principal: Principal,
        upload_id: str,
        length: int,
        kind: str,
        remote: str | None = None,
    ) -> tuple[UploadFile, IngestOrigin]:
        with self._vault.catalog.session() as session:
            upload = admit(self._vault, session, principal, upload_id, length, kind)
            now = self._vault.clock.now()
            row = UploadFile(
                upload_id=upload_id,
                kind=kind,
                length=length,
                offset=0,
                state="receiving",
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            upload.updated_at = now
            session.execute(declare(upload_id, length))
            session.flush()
            return row, origin_of(principal, upload, remote)

    def file_status(self, principal: Principal, upload_id: str, file_id: str) -> FileStatus:
        with self._vault.catalog.read_session() as session:
            return file_status(self._file(session, principal, upload_id, file_id))

    def _file(
        self, session: Session, principal: Principal, upload_id: str, file_id: str
    ) -> UploadFile:
        find_upload(session, principal, upload_id)
        row = session.get(UploadFile, file_id)
        if row is None or row.upload_id != upload_id:
            raise NotFound("no such file in this upload")
        return row

    def receive(
        self,
        principal: Principal,
        upload_id: str,
        file_id: str,
        *,
        offset: int,
        body: BinaryIO,
        body_length: int | None,
        remote: str | None,
    ) -> FileStatus:
        """Take ``body`` for the file at ``offset``; its status afterwards.

        Raises:
            OffsetMismatch: ``offset`` is not where the file's bytes end.
            UploadClosed: the upload or the file is finished.
            BodyCut: the body was cut off (the file keeps what was held before).
        """
        with self._vault.catalog.read_session() as session:
            upload = open_upload(session, principal, upload_id)
            status = file_status(self._file(session, principal, upload_id, file_id))
            origin = origin_of(principal, upload, remote)
        if status.finished:
            if offset == status.length and not body_length:
                return status
            raise UploadClosed("this file is already complete")
        if offset != status.offset:
            raise OffsetMismatch(f"the upload of this file continues at byte {status.offset}")
        target = Target(file_id, upload_id, status.kind, status.length, offset, origin)
        return status_after(target, self._receiver.receive(target, body, body_length))

    def terminate(
        self, principal: Principal, upload_id: str, file_id: str, remote: str | None
    ) -> None:
        """Withdraw a file still arriving: what was received is dropped.

        Raises:
            UploadClosed: the file is finished (stored instances stay).
        """
        with self._vault.catalog.read_session() as session:
            row = self._file(session, principal, upload_id, file_id)
            if row.state != "receiving":
                raise UploadClosed("this file is finished; it cannot be withdrawn")
            received = row.offset
        discard_files(self._vault, [file_id])
        self._vault.audit.record(
            AuditRecord(
                actor=principal.actor,
                action="upload.file.terminate",
                object_type="upload",
                object_id=upload_id,
                remote=remote,
                detail={"bytes": received},
            )
        )
