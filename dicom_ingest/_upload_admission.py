"""Who may reach an upload, and whether a new file may join it.

An upload is reached only by the user who opened it, and only while its case
is within their reach for ``upload`` (:func:`vault.auth.permissions`); any
other upload is "not found", never "forbidden". A new file may join an open
upload if its declared length keeps within ``limits.max_file_bytes`` (ZIP
archives are limited by their entries instead) and the upload's declared
total within ``limits.max_upload_bytes``. :func:`admit_whole` answers the
same in one read statement, for the common request that brings a whole file.

The upload's declared total is a running figure on its row
(``uploads.declared_bytes``): :func:`declare` is written in the transaction
that adds a file's row, and withdrawn files are taken off it, so admission
reads one row however many files the upload already has. Admission is a read
before the write, as before: files admitted at the same moment may together
pass the upload limit by at most one file each.
"""

from __future__ import annotations

from sqlalchemy import Update, select, update
from sqlalchemy.orm import Session

from dicom_ingest.pipeline import IngestOrigin
from vault.auth.permissions import (
    CaseAction,
    Principal,
    can_access_case,
    case_ids_within_reach,
)
from vault.catalog.uploads import Upload
from vault.core import Vault
from vault.errors import NotFound, TooLarge, UploadClosed


def find_upload(session: Session, principal: Principal, upload_id: str) -> Upload:
    """The upload ``upload_id`` if ``principal`` may see it.

    Raises:
        NotFound: unknown, someone else's, or its case out of reach (never told apart).
    """
    upload = session.get(Upload, upload_id)
    if (
        upload is None
        or upload.user_id != principal.user_id
        or not can_access_case(principal, upload.case_id, CaseAction.UPLOAD, session=session)
    ):
        raise NotFound("no such upload")
    return upload


def open_upload(session: Session, principal: Principal, upload_id: str) -> Upload:
    """:func:`find_upload`, if the upload still takes files.

    Raises:
        UploadClosed: the upload is complete or abandoned.
    """
    upload = find_upload(session, principal, upload_id)
    if upload.state != "open":
        raise UploadClosed("this upload is complete; start a new one to send more files")
    return upload


def origin_of(principal: Principal, upload: Upload, remote: str | None) -> IngestOrigin:
    """Who sends the upload's files, from where, for which organisation and case."""
    return IngestOrigin("upload", principal.actor, upload.organisation_id, upload.case_id, remote)


def _check_file_size(vault: Vault, length: int, kind: str) -> None:
    if kind != "zip" and length > vault.settings.limits.max_file_bytes:
        raise TooLarge("the file is larger than this service accepts")


def _check_upload_size(vault: Vault, declared: int, length: int) -> None:
    if declared + length > vault.settings.limits.max_upload_bytes:
        raise TooLarge("the upload is larger than this service accepts")


def admit(
    vault: Vault, session: Session, principal: Principal, upload_id: str, length: int, kind: str
) -> Upload:
    """The open upload a new file of ``length`` bytes may join.

    Raises:
        NotFound, UploadClosed: as :func:`open_upload`.
        TooLarge: the file, or the upload with it, is over its limit.
    """
    _check_file_size(vault, length, kind)
    upload = open_upload(session, principal, upload_id)
    _check_upload_size(vault, upload.declared_bytes, length)
    return upload


def declare(upload_id: str, change: int) -> Update:
    """The statement that adds ``change`` bytes (negative: takes them off) to the upload's total."""
    uploads = Upload.__table__
    total = uploads.c.declared_bytes
    return update(uploads).where(uploads.c.id == upload_id).values(declared_bytes=total + change)


def admit_whole(
    vault: Vault,
    principal: Principal,
    upload_id: str,
    length: int,
    kind: str,
    remote: str | None,
) -> IngestOrigin:
    """:func:`admit` in one read statement; the origin of the new file's instances."""
    _check_file_size(vault, length, kind)
    uploads = Upload.__table__
    columns = (uploads.c.state, uploads.c.organisation_id, uploads.c.case_id)
    query = select(*columns, uploads.c.declared_bytes).where(
        uploads.c.id == upload_id,
        uploads.c.user_id == principal.user_id,
        uploads.c.case_id.in_(case_ids_within_reach(principal, CaseAction.UPLOAD)),
    )
    reader = vault.catalog.engine.execution_options(catalog_readonly=True)
    with reader.connect() as connection, connection.begin():
        found = connection.execute(query).first()
    if found is None:
        raise NotFound("no such upload")
    state, organisation_id, case_id, total = found
    if state != "open":
        raise UploadClosed("this upload is complete; start a new one to send more files")
    _check_upload_size(vault, int(total), length)
    return IngestOrigin("upload", principal.actor, organisation_id, case_id, remote)
