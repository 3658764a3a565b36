"""QIDO-RS (PS3.18 section 10.6) searches: query parameters in, DICOM JSON results out.

:func:`parse_search` turns a request's query into a :class:`Search`: the
catalog filters of :mod:`vault.pseudonymised_index` for the matching keys
this service supports on pseudonymised values (Study, Series and SOP
Instance UIDs as UID lists, Modality and ModalitiesInStudy, SOP Class UID,
PatientID with ``*`` and ``?`` wildcards on the pseudonym), ``limit`` and
``offset``, and ``includefield``. Matching keys it does not support are
reported in :attr:`Search.ignored` (answered with a ``Warning`` header, as
PS3.18 asks) and their attributes returned; empty values only ask for the
attribute. :func:`render` builds one result from the catalog's values and
the pseudonymised header of a representative instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from vault.dicom_headers import dicom_json
from vault.errors import InvalidInput
from vault.pseudonymised_index import Filters

MAX_RESULTS = 1000
_PIXELS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class Level(StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


def _tags(*keywords: str) -> frozenset[int]:
    return frozenset(int(tag_for_keyword(keyword) or 0) for keyword in keywords)


_STUDY_TAGS = _tags(
    "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "RetrieveURL",
)  # fmt: skip
_SERIES_TAGS = _tags(
    "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesDate",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "RetrieveURL",
)  # fmt: skip
_INSTANCE_TAGS = _tags(
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames", "AvailableTransferSyntaxUID", "RetrieveURL",
)  # fmt: skip
DEFAULT_TAGS = {
    Level.STUDY: _STUDY_TAGS,
    Level.SERIES: _SERIES_TAGS | _tags("StudyInstanceUID"),
    Level.INSTANCE: _INSTANCE_TAGS | _tags("StudyInstanceUID", "SeriesInstanceUID", "Modality"),
}
_LOWER = {
    Level.STUDY: (_SERIES_TAGS | _INSTANCE_TAGS) - _STUDY_TAGS,
    Level.SERIES: _INSTANCE_TAGS - _SERIES_TAGS,
    Level.INSTANCE: frozenset[int](),
}
_MATCHING = {
    Level.STUDY: {"StudyInstanceUID", "PatientID", "ModalitiesInStudy", "Modality"},
    Level.SERIES: {"StudyInstanceUID", "PatientID", "SeriesInstanceUID", "Modality"},
    Level.INSTANCE: {
        "StudyInstanceUID", "PatientID", "SeriesInstanceUID", "Modality", "SOPInstanceUID",
        "SOPClassUID",
    },
}  # fmt: skip
_CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}


@dataclass(frozen=True)
class Search:
    """One parsed QIDO-RS query."""

    level: Level
    filters: Filters
    offset: int
    limit: int
    includes: frozenset[int] | None  # None: includefield=all
    ignored: tuple[str, ...]

    @property
    def wanted(self) -> frozenset[int] | None:
        """The tags to return; None for every attribute of this level."""
        return None if self.includes is None else DEFAULT_TAGS[self.level] | self.includes


def _keyword(name: str) -> str:
    """The attribute keyword a query parameter names (keyword or ``ggggeeee``)."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        keyword = keyword_for_tag(int(name, 16))
        if keyword:
            return keyword
    elif tag_for_keyword(name) is not None:
        return name
    raise InvalidInput("a query parameter names no DICOM attribute this service knows")


def _values(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace("\\", ",").split(",") if part.strip())


def _count(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise InvalidInput(f"{name} must be a non-negative integer")
    return int(value)


def _includes(values: Iterable[str]) -> frozenset[int] | None:
    tags: set[int] = set()
    for value in values:
        for name in _values(value):
            if name == "all":
                return None
            tags.add(int(tag_for_keyword(_keyword(name)) or 0))
    return frozenset(tags)


def parse_search(level: Level, query: Iterable[tuple[str, str]], **scope: str) -> Search:
    """The search ``query`` asks for at ``level``, within ``scope`` (path UIDs by keyword).

    Raises:
        InvalidInput: an unknown attribute, or a malformed ``limit`` or ``offset``.
    """
    pairs = list(query)
    control = {name: value for name, value in pairs if name in _CONTROL}
    matching: dict[str, str] = dict(scope)
    ignored: list[str] = []
    extra: set[int] = set()
    for name, value in pairs:
        if name in _CONTROL or "." in name:
            continue
        keyword = _keyword(name)
        extra.add(int(tag_for_keyword(keyword) or 0))
        if not value or value == "*":
            continue
        if keyword in _MATCHING[level] and keyword not in scope:
            matching[keyword] = value
        elif keyword not in scope:
            ignored.append(keyword)
    if control.get("fuzzymatching", "false").lower() == "true":
        ignored.append("fuzzymatching")  # exact and wildcard matching only
    includes = _includes(value for name, value in pairs if name == "includefield")
    limit = min(_count(control, "limit", MAX_RESULTS), MAX_RESULTS)
    return Search(
        level,
        _filters(matching),
        _count(control, "offset", 0),
        limit,
        None if includes is None else includes | extra,
        tuple(ignored),
    )


def _filters(matching: dict[str, str]) -> Filters:
    modalities = _values(matching.get("Modality", "")) + _values(
        matching.get("ModalitiesInStudy", "")
    )
    return Filters(
        study_uids=_values(matching.get("StudyInstanceUID", "")),
        series_uids=_values(matching.get("SeriesInstanceUID", "")),
        sop_uids=_values(matching.get("SOPInstanceUID", "")),
        sop_classes=_values(matching.get("SOPClassUID", "")),
        modalities=modalities,
        patient_id=matching.get("PatientID"),
    )


def render(search: Search, catalog: Dataset, header: Dataset | None) -> dict[str, object]:
    """One result: ``catalog`` values over the ``header``'s attributes the search returns."""
    wanted, lower = search.wanted, _LOWER[search.level]
    result = Dataset()
    for element in header or ():
        if element.tag in _PIXELS:
            continue
        if (wanted is None and element.tag not in lower) or (wanted and element.tag in wanted):
            result.add(element)
    for element in catalog:
        result.add(element)
    return dicom_json(result)
