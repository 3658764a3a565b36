"""The engine's own leak check: no identifier of the original patient is left in the output.

Table E.1-1 and the rules for attributes it does not list decide what each
attribute becomes; this module checks the result instead of trusting it. The
identifiers of the original (Patient's Name, Birth Name and Mother's Birth
Name by their parts, Patient ID, Other Patient IDs, Accession Number, Medical
Record Locator, Patient's Birth Date) are searched for in every text value of
the de-identified data set, nested items included. A hit names the attribute
where it was found, never the value, and the engine quarantines the instance
(``residual-identifier``) instead of passing it on.

What is searched: string values other than UIDs, numbers, dates and times
(those are replaced, shifted or removed by rule, and a shifted date may fall
on the birth date by chance), plus values of unknown VR read as Latin-1. The
patient's pseudonym is not searched. A name part shorter than three characters
or that is a known descriptor term (``KNEE``, ``HAND``) is not searched, nor
is an identifier shorter than three characters: they would match too much.
An identifier is found only as a whole token, never inside a longer run of
letters (``ANN`` in ``SCANNER``) or digits (``1234`` in ``123456``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pydicom.datadict import keyword_for_tag

from deidentify._codec import Level, MalformedError, Part10, parse_part10
from deidentify._values import DEFAULT_CHARSETS, LevelText
from deidentify.descriptors import known_terms

_NAMES = (0x00100010, 0x00101005, 0x00101060)  # patient's, birth, mother's birth
_IDENTIFIERS = (0x00100020, 0x00101000, 0x00080050, 0x00101090, 0x00100030)
_OTHER_IDS_SEQUENCE, _PATIENT_ID = 0x00101002, 0x00100020
_SEARCHED_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN"})
_CHARSET_TAG = 0x00080005
_MIN_LENGTH = 3
_LETTER, _DIGIT = r"[^\W\d_]", r"\d"


def identifiers_of(original: Part10) -> list[str]:
    """The searchable identifiers of ``original``'s patient, upper case."""
    top = LevelText(original.buffer, original.dataset)
    terms = known_terms()
    found: set[str] = set()
    for tag in _NAMES:
        for value in top.values(tag):
            found.update(p for p in re.split(r"[\W_]+", value.upper()) if p not in terms)
    for tag in _IDENTIFIERS:
        found.update(value.upper() for value in top.values(tag))
    other_ids = original.dataset.by_tag.get(_OTHER_IDS_SEQUENCE)
    for item in (other_ids.items or []) if other_ids else []:
        reader = LevelText(original.buffer, item, top.charsets)
        found.update(value.upper() for value in reader.values(_PATIENT_ID))
    return sorted(value for value in found if len(value) >= _MIN_LENGTH)


def residual_identifier(output: bytes, identifiers: list[str], pseudonym: str) -> str | None:
    """The path of the first attribute of ``output`` holding one of ``identifiers``.

    ``None`` when there is none (or nothing to search for).
    """
    if not identifiers:
        return None
    pattern = re.compile("|".join(_whole_token(value) for value in identifiers))
    try:
        parsed = parse_part10(output)
    except MalformedError:
        return "the output"  # the engine's own output must parse; if not, it is not passed on
    for path, text in _texts(parsed.buffer, parsed.dataset, "", DEFAULT_CHARSETS):
        if text != pseudonym and pattern.search(text.upper()):
            return path
    return None


def _whole_token(value: str) -> str:
    """A pattern matching ``value`` not inside a longer run of letters or digits."""
    before = _LETTER if value[0].isalpha() else _DIGIT if value[0].isdigit() else None
    after = _LETTER if value[-1].isalpha() else _DIGIT if value[-1].isdigit() else None
    head = f"(?<!{before})" if before else ""
    tail = f"(?!{after})" if after else ""
    return f"{head}{re.escape(value)}{tail}"


def _texts(
    buffer: bytes | memoryview, level: Level, path: str, charsets: tuple[str, ...]
) -> Iterator[tuple[str, str]]:
    """(path, value) of every searched text value of ``level``, items included."""
    reader = LevelText(buffer, level, charsets)
    for element in level.elements:
        name = (
            keyword_for_tag(element.tag) or f"({element.tag >> 16:04X},{element.tag & 0xFFFF:04X})"
        )
        if element.items is not None:
            for index, item in enumerate(element.items):
                yield from _texts(buffer, item, f"{path}{name}[{index}].", reader.charsets)
        elif element.vr in _SEARCHED_VRS and element.tag != _CHARSET_TAG:
            for value in reader.values(element.tag):
                yield f"{path}{name}", value
