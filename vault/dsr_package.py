"""Access and portability packages (GDPR articles 15 and 20): the person's files and a manifest.

:func:`prepare_package` checks the request (open, of kind ``access`` or
``portability``, identity verified, studies matched) and builds the manifest
(:mod:`vault.dsr_manifest`) before a byte is produced, so a refusal is a clear
error and not a broken download. :func:`stream_package` then produces the ZIP
as it is read: ``manifest.json`` first, then every original instance as
``studies/<study>/<series>/<instance>.dcm`` (internal ids only in names),
each read through the one decrypting reader (:func:`vault.reader.open_instance`,
as :mod:`vault.export` does), which authenticates every segment and checks
the catalogued SHA-256, so the files are bit-identical to what was received.
Memory stays constant; nothing is written to disk by the vault.

When the stream ends (or is abandoned) the export is recorded on the request
and, per study, as ``study.export`` in the access log, with its outcome.
:func:`write_package` is the command line's way: the stream into a file.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crypto.errors import CryptoError
from vault.audit import AuditRecord
from vault.core import Vault
from vault.dsr import load, matched_study_ids, record_step, require_open, require_verified
from vault.dsr_manifest import PackageFile, build_manifest, manifest_bytes
from vault.errors import InvalidInput, VaultError
from vault.objects import CHUNK
from vault.reader import open_instance

_EPOCH = (1980, 1, 1, 0, 0, 0)
_MODE = 0o100600 << 16
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Package:
    """A prepared package: what it will hold, checked and described."""

    request_id: str
    reference: str
    study_ids: tuple[str, ...]
    manifest: bytes
    files: tuple[PackageFile, ...]


def prepare_package(vault: Vault, ref: str) -> Package:
    """Check request ``ref`` and describe its package.

    Raises:
        NotFound: no such request.
        RequestNotOpen: closed, or not an access or portability request.
        IdentityNotVerified: the requester was not verified yet.
        InvalidInput: no stored study is matched to the request.
    """
    with vault.catalog.read_session() as session:
        request = load(session, ref)
        require_open(request, "export")
        require_verified(request)
        study_ids = matched_study_ids(session, request.id)
        manifest, files = build_manifest(session, request, study_ids, vault.clock.now())
    if not manifest["studies"]:
        raise InvalidInput("no stored study is matched to this request", reason="no-studies")
    studies = tuple(entry["study_id"] for entry in manifest["studies"])
    return Package(request.id, request.reference, studies, manifest_bytes(manifest), tuple(files))


class _Spool:
    """A write-only, non-seekable sink whose contents are taken out as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.pending = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self.pending += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: :meth:`take` drains the sink."""

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self.pending = 0
        return data


def _info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = _MODE
    info.file_size = size
    return info


def _zip_chunks(vault: Vault, package: Package) -> Iterator[bytes]:
    spool = _Spool()
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[arg-type]
        archive.writestr(_info(MANIFEST_NAME, len(package.manifest)), package.manifest)
        for item in package.files:
            with (
                open_instance(vault, item.instance_id) as source,
                archive.open(_info(item.path, item.size), "w") as out,
            ):
                while data := source.read(CHUNK):
                    out.write(data)
                    if spool.pending >= CHUNK:
                        yield spool.take()
    if spool.pending:
        yield spool.take()


def stream_package(
    vault: Vault, package: Package, *, actor: str, remote: str | None = None
) -> Iterator[bytes]:
    """The package's ZIP, produced as it is read; the export recorded when it ends.

    Raises (while iterating):
        KeyDestroyedError: a study was erased meanwhile.
        IntegrityError: a stored object failed authentication.
    """
    outcome, sent = "incomplete", 0
    try:
        for piece in _zip_chunks(vault, package):
            sent += len(piece)
            yield piece
        outcome = "success"
    except (VaultError, CryptoError) as exc:
        outcome = f"failure:{exc.reason}"
        raise
    finally:
        _record(vault, package, actor, remote, outcome, sent)


def _record(
    vault: Vault, package: Package, actor: str, remote: str | None, outcome: str, sent: int
) -> None:
    with vault.catalog.session() as session:
        request = load(session, package.request_id)
        detail = {"studies": len(package.study_ids), "files": len(package.files), "bytes": sent}
        record_step(
            vault, session, request, actor, "export", outcome=outcome, detail=detail, remote=remote
        )
        for study_id in package.study_ids:
            record = AuditRecord(
                actor,
                "study.export",
                outcome=outcome,
                object_type="study",
                object_id=study_id,
                remote=remote,
                detail={"dsr": package.request_id},
            )
            vault.audit.record(record, session=session)


def write_package(vault: Vault, ref: str, out: Path, *, actor: str) -> Package:
    """Write request ``ref``'s package to ``out`` (mode 0600; nothing left on failure)."""
    package = prepare_package(vault, ref)
    partial = out.with_name(out.name + ".partial")
    try:
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as sink:
            for piece in stream_package(vault, package, actor=actor):
                sink.write(piece)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return package
