"""Exporting the access log for an auditor: DICOM Audit Messages or FHIR AuditEvents.

:func:`export_audit` writes the records recorded in ``[since, until)`` in
chain order, one per line:

- ``atna``: one DICOM Audit Message (PS3.15 A.5, IHE ATNA) XML document per
  line, as a syslog collector would receive them (:mod:`vault.audit_atna`);
- ``fhir``: FHIR R4 AuditEvent resources as NDJSON, the FHIR bulk-data
  format (:mod:`vault.audit_fhir`).

The file is written beside its target and renamed into place when complete
(mode 0600). The export itself is recorded (``audit.export``, with the format
and the count; never the file's name). Records are read as plain rows,
streamed, so a year of log exports in constant memory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sqlalchemy import Row, select

from vault.audit import AuditRecord
from vault.audit_atna import atna_xml
from vault.audit_fhir import fhir_audit_event
from vault.audit_message import AuditMessage, AuditSource, describe
from vault.catalog.models import AuditEvent
from vault.core import Vault
from vault.errors import InvalidInput

ExportFormat = Literal["atna", "fhir"]
FORMATS: dict[str, Callable[[AuditMessage], str]] = {
    "atna": atna_xml,
    "fhir": lambda message: json.dumps(fhir_audit_event(message), separators=(",", ":")),
}


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time; UTC when it names no offset.

    Raises:
        InvalidInput: not an ISO 8601 date or date-time.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidInput("not an ISO 8601 date or time", reason="export-range") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def audit_source(vault: Vault) -> AuditSource:
    """The vault's AuditSourceIdentification, from ``[audit]`` settings."""
    settings = vault.settings.audit
    return AuditSource.of(settings.source_id, settings.site_id)


def stored_records(
    vault: Vault, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[Row]:
    """Access-log rows recorded in ``[since, until)``, in chain order, streamed."""
    query = select(AuditEvent.__table__).order_by(AuditEvent.seq)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    with vault.catalog.read_session() as session:
        yield from session.execute(query.execution_options(yield_per=2000))


def render_lines(vault: Vault, fmt: str, rows: Iterator[Row]) -> Iterator[str]:
    """Each row as one line of format ``fmt`` (``atna`` or ``fhir``)."""
    render = FORMATS.get(fmt)
    if render is None:
        raise InvalidInput("unknown export format (atna or fhir)", reason="export-format")
    source = audit_source(vault)
    for row in rows:
        yield render(describe(row, source))


def _write(lines: Iterator[str], out: Path) -> int:
    partial = out.with_name(out.name + ".partial")
    count = 0
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            for line in lines:
                sink.write(line)
                sink.write("\n")
                count += 1
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


def export_audit(
    vault: Vault,
    fmt: ExportFormat,
    out: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    actor: str,
) -> int:
    """Write the records of ``[since, until)`` to ``out`` as ``fmt``; the count,
    recording the export as ``actor``'s.

    Raises:
        InvalidInput: unknown format, or ``since`` not before ``until``.
    """
    if fmt not in FORMATS:
        raise InvalidInput("unknown export format (atna or fhir)", reason="export-format")
    if since is not None and until is not None and since >= until:
        raise InvalidInput("--since must be before --until", reason="export-range")
    count = _write(render_lines(vault, fmt, stored_records(vault, since=since, until=until)), out)
    detail = {"format": fmt, "records": count}
    vault.audit.record(AuditRecord(actor, "audit.export", detail=detail))
    return count
