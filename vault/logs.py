"""The operational log of the long-running commands: one format, one level, no PHI.

``dicom-vault serve``, ``scp`` (and each receiver process) and ``audit
forward`` call :func:`configure_logging` once at start. It sends records to
stderr (the journal, under systemd) as ``time level logger: message``: the
vault's own loggers (``vault``, ``dicom_ingest``, ``deidentify``,
``crypto``) and uvicorn's server messages at ``log_level`` (default
``info``), everything else, pynetdicom included, at ``warning``. Every record
passes :class:`RedactValues` on its way out, so a quoted value is never
printed, whichever library logged it. A traceback keeps its frames and the
type of each exception, never their messages: an exception raised by a
library may quote a header value (``invalid literal for int(): 'DOE^JOHN'``).

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
import traceback
from collections.abc import Iterator
from types import TracebackType

from vault.pydicom_quiet import RedactValues

OWN_LOGGERS = ("vault", "dicom_ingest", "deidentify", "crypto", "uvicorn.error")
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WITHHELD = "(message withheld: it may quote data)"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _without_messages(exc: traceback.TracebackException) -> Iterator[str]:
    """``exc`` formatted as Python does, each exception's message replaced by :data:`WITHHELD`."""
    if exc.__cause__ is not None:
        yield from _without_messages(exc.__cause__)
        yield "\nThe above exception was the direct cause of the following exception:\n\n"
    elif exc.__context__ is not None and not exc.__suppress_context__:
        yield from _without_messages(exc.__context__)
        yield "\nDuring handling of the above exception, another exception occurred:\n\n"
    if exc.stack:
        yield "Traceback (most recent call last):\n"
        yield from exc.stack.format()
    kind = exc.exc_type
    name = f"{kind.__module__}.{kind.__qualname__}" if kind is not None else "exception"
    yield f"{name} {WITHHELD}\n"


def withheld_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (its causes too), with frames and exception types only."""
    text = "".join(_without_messages(traceback.TracebackException.from_exception(exc)))
    return text.rstrip("\n")


class WithheldMessages(logging.Formatter):
    """:data:`FORMAT`, with tracebacks that keep frames and exception types only."""

    def formatException(self, ei: ExcInfo) -> str:  # type: ignore[override]
        return withheld_traceback(ei[1])

    def format(self, record: logging.LogRecord) -> str:
        # Another handler may have cached its own full traceback in exc_text.
        cached = record.exc_text
        thrown = record.exc_info if record.exc_info and record.exc_info[0] else None
        record.exc_text = self.formatException(thrown) if thrown else None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached


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
        handler.setFormatter(WithheldMessages(FORMAT))
        handler.addFilter(RedactValues())
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    _through_the_vault_handler(UVICORN_LOGGERS)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # no line per request


def _through_the_vault_handler(names: tuple[str, ...]) -> None:
    """Send these loggers' records to the root handler only: a server started with
    uvicorn's own logging configuration would otherwise print them, tracebacks
    and all, through handlers of its own."""
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
