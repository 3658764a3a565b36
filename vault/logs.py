"""The operational log of the long-running commands: one format, one level, no PHI.

``dicom-vault serve``, ``scp`` (and each receiver process) and ``audit
forward`` call :func:`configure_logging` once at start. It sends records to
stderr (the journal, under systemd) as ``time level logger: message``: the
vault's own loggers (``vault``, ``dicom_ingest``, ``deidentify``,
``crypto``) at ``log_level`` (default ``info``), everything else, pynetdicom
included, at ``warning``. Every record passes :class:`RedactValues` on its
way out, so a quoted value is never printed, whichever library logged it.

What is logged at ``info`` is operational: the receiver listening,
associations admitted, refused and closed (PACS node, peer address,
instances stored and refused), instances and uploaded files refused with
their reason code, uploads completed or abandoned with their counts.
Who accessed which study is the access log's business (:mod:`vault.audit`),
not this one's.
"""

from __future__ import annotations

import logging
import sys

from vault.pydicom_quiet import RedactValues

OWN_LOGGERS = ("vault", "dicom_ingest", "deidentify", "crypto")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _VaultHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs (recognised when called
    again). It writes to whatever ``sys.stderr`` is when each record comes,
    not to the stream of the moment it was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(level: str = "info") -> None:
    """Send log records to stderr as the module docstring says (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(handler, _VaultHandler) for handler in root.handlers):
        handler = _VaultHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(RedactValues())
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
