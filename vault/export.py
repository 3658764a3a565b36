"""Administrator export: a study's original files, decrypted, into a folder.

Files are named by internal ids only (``<series id>/<instance id>.dcm``), so
the folder layout carries no PHI. Every export is recorded in the access log.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sqlalchemy import select

from vault.audit import AuditRecord
from vault.catalog.models import Instance, Study
from vault.core import Vault
from vault.errors import NotFound
from vault.reader import open_instance


def export_study(vault: Vault, study_id: str, out: Path, *, actor: str) -> int:
    """Decrypt every instance of ``study_id`` into ``out``; return how many.

    Raises:
        NotFound: no such study.
        KeyDestroyedError: the study was crypto-shredded.
        IntegrityError: an object failed authentication (its partial file is removed).
    """
    with vault.catalog.session() as session:
        if session.get(Study, study_id) is None:
            raise NotFound("no such study")
        rows = session.execute(
            select(Instance.id, Instance.series_id).where(Instance.study_id == study_id)
        ).all()
    for instance_id, series_id in rows:
        _export_one(vault, instance_id, out / series_id / f"{instance_id}.dcm")
    vault.audit.record(
        AuditRecord(
            actor,
            "study.export",
            object_type="study",
            object_id=study_id,
            detail={"instances": len(rows)},
        )
    )
    return len(rows)


def _export_one(vault: Vault, instance_id: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = target.with_suffix(".partial")
    try:
        with open_instance(vault, instance_id) as source, partial.open("wb") as sink:
            os.chmod(partial, 0o600)
            shutil.copyfileobj(source, sink, 1024 * 1024)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
