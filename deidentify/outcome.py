"""What de-identifying one instance produced: a dataset or a quarantine, and a report.

Nothing here carries an attribute's value: the report names attributes by
tag and keyword and says what was done to them, so it can be logged, stored
and shown to a DPO without leaking what it describes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from enum import StrEnum

import pydicom
from pydicom.dataset import Dataset


class ReportAction(StrEnum):
    """What happened to one attribute."""

    REMOVED = "removed"
    EMPTIED = "emptied"
    REPLACED = "replaced"
    SHIFTED = "shifted"
    CLEANED = "cleaned"
    KEPT = "kept"
    ADDED = "added"


@dataclass(frozen=True, slots=True)
class AttributeChange:
    """One attribute's fate. ``path`` locates it, e.g. ``SourceImageSequence[0].PersonName``."""

    path: str
    tag: int
    action: ReportAction

    @property
    def tag_text(self) -> str:
        return f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


@dataclass(frozen=True, slots=True)
class QuarantineReason:
    """Why an instance was held back: a machine code and a PHI-free sentence."""

    code: str
    message: str


@dataclass(slots=True)
class DeidOutcome:
    """The result of de-identifying one instance.

    Either ``encoded`` (the de-identified Part 10 bytes) or ``quarantine`` is
    set. ``dataset`` parses ``encoded`` on first use. ``pseudonym`` is the
    patient's pseudonym, set whenever the header could be read; the three
    UIDs are the *new* (keyed) ones, for filing the output.
    """

    encoded: bytes | None = None
    quarantine: QuarantineReason | None = None
    report: list[AttributeChange] = field(default_factory=list)
    pseudonym: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_instance_uid: str | None = None
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when a de-identified instance was produced."""
        return self.quarantine is None and self.encoded is not None

    @property
    def dataset(self) -> Dataset | None:
        """The de-identified dataset (``file_meta`` set), parsed from ``encoded``."""
        if self._dataset is None and self.encoded is not None:
            self._dataset = pydicom.dcmread(io.BytesIO(self.encoded))
        return self._dataset

    def counts(self) -> dict[ReportAction, int]:
        """How many attributes got each action."""
        totals: dict[ReportAction, int] = {}
        for change in self.report:
            totals[change.action] = totals.get(change.action, 0) + 1
        return totals
