"""Offline de-identification of files and folders with the vault's engine.

The same :class:`~deidentify.engine.Deidentifier` the pipeline uses, applied
to files on disk: every DICOM file under the inputs is read, de-identified
and written under ``out`` as ``<pseudonym>/<study>/<series>/<instance>.dcm``
(keyed UIDs: no PHI in any path). Quarantined files are never written. On
request, ``deidentification-report.json`` records the profile, the key id
and, per attribute, how many times it was removed, emptied, replaced,
shifted, cleaned or kept, with no value and no input path in it.

The CLI (``dicom-vault deidentify IN... --out DIR [--report] [--organisation
NAME]``) calls :func:`run` with the deployment's pseudonym key and the
catalog's registered issuers. Offline files have no organisation of their
own: ``--organisation`` names the one they come from, so a patient ID without
issuer gets the pseudonym and date offset the pipeline gives it for that
organisation's studies. Without it (the default) such IDs are in one
``unaffiliated`` domain, shared by every offline run without
``--organisation`` and by no organisation; IDs with an issuer resolve as in
the pipeline (:mod:`deidentify.pseudonyms`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from crypto.keys import MacKey
from deidentify.engine import Deidentifier
from deidentify.outcome import DeidOutcome, QuarantineReason
from deidentify.profile import Profile
from deidentify.pseudonyms import NO_ORGANISATION, DomainResolver, PseudonymKeys
from deidentify.table import table_metadata

REPORT_NAME = "deidentification-report.json"
DEFAULT_MAX_FILE_BYTES = 4 * 1024**3
_INDEX = re.compile(r"\[\d+\]")


@dataclass
class OfflineSummary:
    """What an offline run did.

    ``quarantined`` pairs each held-back input with its reason; it stays in
    the caller's process (input paths may name patients) and is never
    written to the report.
    """

    written: list[Path] = field(default_factory=list)
    quarantined: list[tuple[Path, QuarantineReason]] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    report_path: Path | None = None

    def quarantine_counts(self) -> dict[str, int]:
        """How many inputs were quarantined for each reason code."""
        return dict(Counter(reason.code for _, reason in self.quarantined))


def iter_inputs(inputs: list[Path]) -> Iterator[Path]:
    """Every regular file named or under a named folder, in a stable order."""
    for root in inputs:
        if root.is_dir():
            yield from sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        elif root.is_file():
            yield root


def _output_path(out: Path, outcome: DeidOutcome) -> Path:
    parts = [
        outcome.pseudonym or "unknown",
        outcome.study_uid or "unknown-study",
        outcome.series_uid or "unknown-series",
    ]
    return out.joinpath(*parts, f"{outcome.sop_instance_uid or 'unknown'}.dcm")


class _Report:
    """Per-attribute counts across all written outputs."""

    def __init__(self) -> None:
        self.attributes: dict[str, Counter[str]] = {}
        self.instances = 0

    def add(self, outcome: DeidOutcome) -> None:
        self.instances += 1
        for change in outcome.report:
            key = f"{change.tag_text} {_INDEX.sub('[]', change.path)}"
            self.attributes.setdefault(key, Counter())[change.action.value] += 1

    def write(
        self, path: Path, engine: Deidentifier, summary: OfflineSummary, domains: DomainResolver
    ) -> None:
        document = {
            "profile": [code.meaning for code in engine.profile.method_codes],
            "method_codes": [code.value for code in engine.profile.method_codes],
            "pseudonym_key_id": engine.keys.key_id,
            "organisation_id": domains.organisation_id,
            "table": {k: table_metadata()[k] for k in ("edition", "generated_by")},
            "instances_written": self.instances,
            "instances_quarantined": summary.quarantine_counts(),
            "attributes": {k: dict(v) for k, v in sorted(self.attributes.items())},
        }
        path.write_text(json.dumps(document, indent=1) + "\n")


def deidentify_paths(
    inputs: list[Path],
    out: Path,
    *,
    profile: Profile,
    keys: PseudonymKeys,
    domains: DomainResolver = NO_ORGANISATION,
    report: bool = False,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> OfflineSummary:
    """De-identify every file under ``inputs`` into ``out``.

    Parameters
    ----------
    inputs:
        Files and folders (searched recursively; symbolic links skipped).
    out:
        Output folder, created if needed.
    profile, keys:
        The profile and pseudonym keys, as the pipeline uses them.
    domains:
        How patient IDs resolve to domains: the organisation the files come
        from, if known, and the registered issuers (none by default: IDs
        without issuer are ``unaffiliated``).
    report:
        Also write ``out/deidentification-report.json``.
    max_file_bytes:
        Larger files are skipped unread.

    Returns
    -------
    An :class:`OfflineSummary`; files that are not DICOM are quarantined
    with reason ``unreadable``.
    """
    engine = Deidentifier(profile, keys)
    summary = OfflineSummary()
    counts = _Report()
    out.mkdir(parents=True, exist_ok=True)
    for path in iter_inputs(inputs):
        if path.stat().st_size > max_file_bytes:
            summary.skipped.append(path)
            continue
        outcome = engine.deidentify_bytes(path.read_bytes(), domains=domains)
        if not outcome.ok or outcome.encoded is None:
            summary.quarantined.append((path, outcome.quarantine or _NO_OUTPUT))
            continue
        target = _output_path(out, outcome)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(outcome.encoded)
        summary.written.append(target)
        counts.add(outcome)
    if report:
        summary.report_path = out / REPORT_NAME
        counts.write(summary.report_path, engine, summary, domains)
    return summary


_NO_OUTPUT = QuarantineReason("no-output", "no output was produced")


def run(
    inputs: list[Path],
    out: Path,
    *,
    mac_key: MacKey,
    report: bool = False,
    profile: Profile | None = None,
    domains: DomainResolver = NO_ORGANISATION,
) -> OfflineSummary:
    """The CLI's entry: :func:`deidentify_paths` with the deployment's pseudonym key.

    ``mac_key`` is ``provider.mac_key("pseudonym")`` and ``domains`` the
    catalog's registered issuers (with the organisation the files come from,
    if given), so offline outputs carry the same pseudonyms and UIDs as the
    pipeline's.
    """
    return deidentify_paths(
        inputs,
        out,
        profile=profile or Profile(),
        keys=PseudonymKeys(mac_key),
        domains=domains,
        report=report,
    )
