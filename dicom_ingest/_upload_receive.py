"""Receiving the bytes of one uploaded file: straight into the pipeline, or held first.

:meth:`Receiver.receive` takes one request body for a file at its current
offset and decides:

- a body that completes the file and is at most ``uploads.direct_max_bytes``
  (the common case: a whole slice in one request) is read by the ingest
  pipeline directly, after the file's held parts if any: no extra copy;
- any other body is held encrypted in blocks (:mod:`dicom_ingest._upload_spool`),
  and if that completes the file, the held bytes are read back;
- ZIP archives are always held whole first (reading one needs seeking).

A finished file is a DICOM instance for :class:`IngestPipeline`, an archive
for :mod:`dicom_ingest._upload_zip`, a DICOMDIR (named so, or recognised by
its file meta) checked by :func:`dicom_ingest.sources.check_dicomdir` and
skipped, or OS junk, skipped. The outcome is recorded with the instances it
stored (for a stored DICOM file, in the very transaction that catalogues its
instance: one commit per file), and the held parts are dropped. A body cut off mid-way raises
:class:`~dicom_ingest._upload_pipe.BodyCut`: nothing of it is recorded.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO

from sqlalchemy import Connection, insert, update

from dicom_ingest._upload_admission import declare
from dicom_ingest._upload_spool import (
    HeldPart,
    HeldView,
    JoinedReader,
    drop_held,
    held_openers,
    held_parts,
    hold_blocks,
)
from dicom_ingest._upload_zip import EntryRefusal, ingest_archive
from dicom_ingest.pipeline import IngestOrigin, IngestPipeline, IngestResult
from dicom_ingest.sources import ZipLimits, check_dicomdir, looks_like_dicomdir
from vault.audit import AuditRecord
from vault.catalog.db import insert_or_ignore
from vault.catalog.models import new_id
from vault.catalog.uploads import UploadFile, UploadInstance
from vault.core import Vault
from vault.errors import InvalidInput, OffsetMismatch, TooLarge, VaultError

log = logging.getLogger("dicom_ingest.uploads")

MAX_REFUSALS_KEPT = 1000
_SNIFF_BYTES = 1024
_ZIP_BUFFER = 256 * 1024
_LINK_BATCH = 500


@dataclass(frozen=True)
class Target:
    """The file a request writes to, as the catalog had it when the request began."""

    file_id: str
    upload_id: str
    kind: str
    length: int
    offset: int
    origin: IngestOrigin
    # False for a file sent whole in the request creating it: its catalog row
    # is written once, with its outcome (a cut-off body then leaves nothing).
    recorded: bool = True


@dataclass(frozen=True)
class Received:
    """Where a file's bytes end after a request, and its outcome once finished."""

    offset: int
    outcome: Outcome | None


@dataclass
class Outcome:
    """What became of a finished file."""

    state: str
    results: list[IngestResult] = field(default_factory=list)
    refused: list[EntryRefusal] = field(default_factory=list)
    error: VaultError | None = None
    recorded: bool = False  # written already, with the instance, by the pipeline

    @classmethod
    def refusal(cls, exc: VaultError) -> Outcome:
        return cls("refused", refused=[EntryRefusal(None, exc.reason, str(exc))], error=exc)

    @property
    def stored(self) -> int:
        return sum(1 for result in self.results if not result.duplicate)

    @property
    def duplicates(self) -> int:
        return len(self.results) - self.stored


class Receiver:
    """Takes request bodies for files of uploads (see module docstring)."""

    def __init__(self, vault: Vault, pipeline: IngestPipeline) -> None:
        self._vault = vault
        self._pipeline = pipeline
        self._settings = vault.settings.uploads
        limits = vault.settings.limits
        self._zip_limits = ZipLimits(
            limits.max_zip_ratio, limits.max_upload_bytes, limits.max_zip_entries
        )

    def receive(self, target: Target, body: BinaryIO, body_length: int | None) -> Received:
        """Take ``body`` at the file's offset: the new offset, and the outcome once finished.

        Raises:
            BodyCut: the body was cut off (held blocks before the cut stay).
            TooLarge: the body goes past the file's declared length.
            OffsetMismatch: another request moved the offset meanwhile.
        """
        remaining = target.length - target.offset
        if body_length is not None and body_length > remaining:
            raise TooLarge("the request carries more bytes than the upload declared")
        if target.kind == "junk":
            return self._discard(target, body, remaining)
        if self.takes_whole(target.kind, remaining, body_length):
            return Received(target.length, self._finish(target, body))
        if not target.recorded:
            raise ValueError("only a file sent whole may be recorded with its outcome")
        offset = hold_blocks(
            self._vault,
            target.file_id,
            body,
            start=target.offset,
            limit=remaining,
            block_bytes=self._settings.block_bytes,
        )
        if offset < target.length:
            return Received(offset, None)
        return Received(offset, self._finish(target, None))

    def takes_whole(self, kind: str, remaining: int, body_length: int | None) -> bool:
        """Whether a body of ``body_length`` bytes finishing the file goes straight in."""
        direct = body_length == remaining and remaining <= self._settings.direct_max_bytes
        return kind == "junk" or (direct and kind != "zip")

    def _discard(self, target: Target, body: BinaryIO, remaining: int) -> Received:
        """OS junk: read and drop the bytes; skipped once all arrived."""
        received = 0
        while chunk := body.read(min(1024 * 1024, remaining - received + 1)):
            received += len(chunk)
            if received > remaining:
                raise TooLarge("the request carries more bytes than the upload declared")
        if target.offset + received < target.length:
            self._advance(target, received)
            return Received(target.offset + received, None)
        outcome = Outcome("skipped")
        self._record(target, outcome)
        return Received(target.length, outcome)

    def _advance(self, target: Target, received: int) -> None:
        with self._vault.catalog.session() as session:
            moved = session.execute(
                update(UploadFile)
                .where(UploadFile.id == target.file_id, UploadFile.offset == target.offset)
                .values(offset=target.offset + received, updated_at=self._vault.clock.now())
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                raise OffsetMismatch("another request for this file moved its offset")

    def _finish(self, target: Target, tail: BinaryIO | None) -> Outcome:
        nothing_held = tail is not None and (target.offset == 0 or not target.recorded)
        parts = [] if nothing_held else held_parts(self._vault, target.file_id)
        held = parts[-1].end if parts else 0
        if held != (target.offset if tail is not None else target.length):
            raise OffsetMismatch("another request for this file moved its offset")
        outcome = self._process(target, parts, tail)
        if not outcome.recorded:
            self._record(target, outcome)
        if parts:
            drop_held(self._vault, [target.file_id])
        if outcome.refused:
            reasons = ", ".join(sorted({refusal.error for refusal in outcome.refused}))
            log.info(
                "upload %s: file %s %s (%s)",
                target.upload_id,
                target.file_id,
                outcome.state,
                reasons,
            )
        return outcome

    def _process(self, target: Target, parts: list[HeldPart], tail: BinaryIO | None) -> Outcome:
        if target.kind == "zip":
            return self._archive(target, parts)
        openers: list[Callable[[], BinaryIO]] = list(held_openers(self._vault, parts))
        if tail is not None:
            openers.append(lambda: tail)
        with JoinedReader(openers) as source:
            head = source.read(_SNIFF_BYTES)
            whole = JoinedReader([lambda: io.BytesIO(head), lambda: source])  # type: ignore[list-item]
            try:
                if target.kind == "dicomdir" or looks_like_dicomdir(head):
                    check_dicomdir(whole)  # type: ignore[arg-type]
                    return Outcome("skipped")
                also = partial(self._record_with_instance, target)
                result = self._pipeline.ingest(whole, target.origin, also=also)  # type: ignore[arg-type]
            except VaultError as exc:
                return Outcome.refusal(exc)
        return Outcome(_state_of(result), results=[result], recorded=True)

    def _record_with_instance(
        self, target: Target, connection: Connection, result: IngestResult
    ) -> None:
        """The file's outcome, written in the pipeline's transaction for its instance."""
        self._write_outcome(connection, target, Outcome(_state_of(result), results=[result]))

    def _archive(self, target: Target, parts: list[HeldPart]) -> Outcome:
        def ingest(entry: BinaryIO) -> IngestResult:
            return self._pipeline.ingest(entry, target.origin)

        with HeldView(self._vault, parts) as view:
            buffered = io.BufferedReader(view, _ZIP_BUFFER)  # type: ignore[arg-type]
            try:
                archive = ingest_archive(buffered, self._zip_limits, ingest)  # type: ignore[arg-type]
            except VaultError as exc:
                return Outcome.refusal(exc)
        if not archive.results and not archive.refused:
            return Outcome.refusal(InvalidInput("the archive holds no file to import"))
        state = "partial" if archive.refused else "stored"
        if not archive.results:
            state = "refused"
        elif not archive.refused and not archive.stored:
            state = "duplicate"
        return Outcome(state, results=archive.results, refused=archive.refused)

    def _record(self, target: Target, outcome: Outcome) -> None:
        """Record the outcome and the instances it stored (no-op if already finished)."""
        with self._vault.catalog.engine.begin() as connection:
            self._write_outcome(connection, target, outcome)

    def _write_outcome(self, connection: Connection, target: Target, outcome: Outcome) -> None:
        """Write the outcome in ``connection``'s transaction (no-op if already finished)."""
        now = self._vault.clock.now()
        kept = [refusal.as_dict() for refusal in outcome.refused[:MAX_REFUSALS_KEPT]]
        values = {
            "state": outcome.state,
            "offset": target.length,
            "stored": outcome.stored,
            "duplicates": outcome.duplicates,
            "refused_count": len(outcome.refused),
            "refused": json.dumps(kept),
            "updated_at": now,
        }
        files = UploadFile.__table__
        if not target.recorded:
            row = {"id": target.file_id, "upload_id": target.upload_id, "kind": target.kind}
            row |= {"length": target.length, "created_at": now}
            connection.execute(insert(files).values(**row, **values))
            connection.execute(declare(target.upload_id, target.length))
        else:
            finished = connection.execute(
                update(files)
                .where(files.c.id == target.file_id, files.c.state == "receiving")
                .values(**values)
            )
            if not finished.rowcount:
                return
        _link_instances(connection, target, outcome.results)
        if target.kind != "dicom":
            self._audit(connection, target, outcome)

    def _audit(self, connection: Connection, target: Target, outcome: Outcome) -> None:
        """Archives, DICOMDIR files and junk: the pipeline records instances, this the file."""
        error = outcome.error
        self._vault.audit.append(
            connection,
            AuditRecord(
                actor=target.origin.actor,
                action="upload.file",
                outcome=f"refused:{error.reason}" if error else outcome.state,
                object_type="upload",
                object_id=target.upload_id,
                remote=target.origin.remote,
                detail={
                    "kind": target.kind,
                    "bytes": target.length,
                    "stored": outcome.stored,
                    "duplicates": outcome.duplicates,
                    "refused": len(outcome.refused),
                },
            ),
        )


def _state_of(result: IngestResult) -> str:
    return "duplicate" if result.duplicate else "stored"


def _link_instances(connection: Connection, target: Target, results: list[IngestResult]) -> None:
    """Record the instances ``results`` name for the upload (each once per upload)."""
    rows = {
        result.instance_id: {
            "id": new_id(),
            "upload_id": target.upload_id,
            "file_id": target.file_id,
            "instance_id": result.instance_id,
            "study_id": result.study_id,
        }
        for result in results
    }
    if not rows:
        return
    statement = insert_or_ignore(
        UploadInstance.__table__, connection.dialect.name, "upload_id", "instance_id"
    )
    linked = list(rows.values())
    for start in range(0, len(linked), _LINK_BATCH):
        connection.execute(statement, linked[start : start + _LINK_BATCH])
