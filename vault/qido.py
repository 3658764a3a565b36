"""QIDO-RS (PS3.18 section 10.6) searches: query parameters in, DICOM JSON results out.

:func:`parse_search` turns a request's query into a :class:`Search`: the
catalog filters of :mod:`vault.pseudonymised_index` for the matching keys
this service supports on pseudonymised values (Study, Series and SOP
Instance UIDs as UID lists, Modality and ModalitiesInStudy, SOP Class UID,
PatientID with ``*`` and ``?`` wildcards on the pseudonym), ``limit`` and
``offset``, and ``includefield``. What it does not support is ignored and
reported in :attr:`Search.ignored` (answered with a ``Warning`` header, as
PS3.18 asks): matching keys on other attributes (their attributes are still
returned), nested (dotted) keys, ``fuzzymatching=true``,
``emptyvaluematching`` and ``multiplevaluematching``, and parameters that
name no attribute (a cache-buster ``_=...``: a parameter starting with ``_``
is ignored without a word). Empty values only ask for the attribute. Only a
malformed ``limit`` or ``offset`` is refused (400). :func:`render` builds one
result from the catalog's values and the pseudonymised header of a
representative instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from vault.dicom_headers import dicom_json
from vault.errors import BadRequest
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
_UNSUPPORTED_CONTROL = {"emptyvaluematching", "multiplevaluematching"}


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


def _keyword(name: str) -> str | None:
    """The attribute keyword a query parameter names (keyword or ``ggggeeee``), if any."""
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _shown(name: str) -> str:
    """A parameter name fit to quote in a Warning header (it comes from the caller)."""
    plain = all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    return name if plain and len(name) <= 64 else "an unknown parameter"


def _values(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace("\\", ",").split(",") if part.strip())


def _count(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(value)


def _includes(values: Iterable[str], ignored: list[str]) -> frozenset[int] | None:
    tags: set[int] = set()
    for value in values:
        for name in _values(value):
            if name == "all":
                return None
            keyword = _keyword(name)
            if keyword is None:  # a nested (dotted) path, or no attribute
                ignored.append(f"includefield={_shown(name)}")
            else:
                tags.add(int(tag_for_keyword(keyword) or 0))
    return frozenset(tags)


def parse_search(level: Level, query: Iterable[tuple[str, str]], **scope: str) -> Search:
    """The search ``query`` asks for at ``level``, within ``scope`` (path UIDs by keyword).

    Raises:
        BadRequest: a malformed ``limit`` or ``offset``.
    """
    pairs = list(query)
    control = {name: value for name, value in pairs if name in _CONTROL}
    matching: dict[str, str] = dict(scope)
    ignored: list[str] = []
    extra: set[int] = set()
    for name, value in pairs:
        if name in _CONTROL or name.startswith("_"):
            continue
        if name in _UNSUPPORTED_CONTROL:
            ignored.append(name)
            continue
        keyword = _keyword(name)
        if keyword is None:  # a nested (dotted) key, a control we lack, or no attribute
            ignored.append(_shown(name))
            continue
        extra.add(int(tag_for_keyword(keyword) or 0))
        if not value or value == "*":
            continue
        if keyword in _MATCHING[level] and keyword not in scope:
            matching[keyword] = value
        elif keyword not in scope:
            ignored.append(keyword)
    if control.get("fuzzymatching", "false").lower() == "true":
        ignored.append("fuzzymatching")  # exact and wildcard matching only
    includes = _includes((value for name, value in pairs if name == "includefield"), ignored)
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
