"""The command-line entry point's adapter: paths in, the pipeline, a summary out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dicom_ingest.pipeline import IngestOrigin, IngestPipeline
from dicom_ingest.sources import ZipLimits, iter_sources
from dicom_ingest.validation import ValidationPolicy
from vault.admin import case_by_reference
from vault.case_rules import require_open
from vault.core import Vault
from vault.errors import VaultError


@dataclass
class IngestSummary:
    stored: int = 0
    duplicates: int = 0
    refused: int = 0
    studies: set[str] = field(default_factory=set)

    def describe(self) -> str:
        studies = ", ".join(sorted(self.studies)) or "none"
        return (
            f"stored {self.stored}, already stored {self.duplicates}, refused {self.refused};"
            f" studies: {studies}"
        )


def zip_limits(vault: Vault) -> ZipLimits:
    limits = vault.settings.limits
    return ZipLimits(limits.max_zip_ratio, limits.max_upload_bytes, limits.max_zip_entries)


def ingest_paths(
    vault: Vault,
    paths: list[Path],
    *,
    case_reference: str,
    actor: str,
    echo: Callable[[str], None],
) -> IngestSummary:
    """Ingest every file under ``paths`` into the case as ``actor``; report refusals
    as they happen."""
    with vault.catalog.session() as session:
        case = case_by_reference(session, case_reference)
        require_open(case)
        origin = IngestOrigin("cli", actor, case.organisation_id, case.id)
    pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
    summary = IngestSummary()
    for item in iter_sources(paths, zip_limits(vault)):
        try:
            if item.error is not None:
                raise item.error
            with item.open() as stream:
                result = pipeline.ingest(stream, origin)
        except VaultError as exc:
            summary.refused += 1
            echo(f"refused {item.name}: {exc}")
            continue
        summary.studies.add(result.study_id)
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.stored += 1
    return summary
