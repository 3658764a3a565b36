"""pydicom, set up once for the whole vault: no element value reaches a log or a warning.

pydicom checks values as it reads them and reports an invalid one *with the
value*, through the ``pydicom`` logger and through :mod:`warnings` at once
("Invalid value for VR UI: '1.2.826...'"). Sent by a PACS or a surgeon's
upload, that value is a patient's UID, birth date or name, and logs go to
stderr, the journal and log collectors. So, on import (``vault`` imports
this module first):

- values are not validated on reading (``reading_validation_mode =
  IGNORE``): the vault checks what it relies on itself
  (:mod:`dicom_ingest.validation` refuses an invalid UID with a PHI-free
  reason), and pydicom's checks cost time on every instance;
- warnings issued from pydicom's modules are not shown: pydicom sends the
  same message to its logger;
- every record of the ``pydicom`` logger has its quoted values replaced by
  ``<value>`` (:class:`RedactValues`), whatever else it says.

Values are still read exactly as stored, and writing (de-identified copies)
keeps pydicom's own validation.
"""

from __future__ import annotations

import logging
import re
import warnings

import pydicom.config

REDACTED = "<value>"
# Greedy, from a quote to the last quote of its kind: a value with an
# apostrophe in it ('O'BRIEN') is redacted whole, at the cost of also
# redacting what lies between two quoted values.
_QUOTED = re.compile(r"""b?'.*'|b?".*\"""", re.DOTALL)


class RedactValues(logging.Filter):
    """Replaces every quoted value in a record's message by ``<value>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _QUOTED.sub(REDACTED, message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def quiet_pydicom() -> None:
    """Apply the settings of the module docstring (idempotent)."""
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logger = logging.getLogger("pydicom")
    if not any(isinstance(f, RedactValues) for f in logger.filters):
        logger.addFilter(RedactValues())


quiet_pydicom()
