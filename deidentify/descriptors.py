"""Cleaning of descriptions and comments (the Clean Descriptors Option).

A descriptor is never kept verbatim. It is replaced by the tokens of it that
are known technical or anatomical terms (``data/descriptor_terms.txt``) and
measurements written with a decimal point or a unit (``1.0``, ``0.625MM``,
``120KV``); everything else is dropped. So "AXIAL 1.0MM BONE Marguerite
Quuxleigh PQX4417093" becomes "AXIAL 1.0MM BONE".

Why an allowlist rather than removing the attribute or searching for names:
engineers pick the series to model from by its description (bone kernel,
thin slices, which knee), and a denylist of names and identifiers can never
be complete, whereas an allowlist cannot let through a word it does not
know. Bare integers are dropped too: they may be record numbers, dates or
parts of a phone number. So are dotted chains (``12.05.61``, a date of birth)
and a number without a unit standing next to another number (``4.417 093``,
a record number written with a separator): a measurement stands alone.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_TOKEN = re.compile(r"\d+(?:\.\d+)*[A-Za-z]*|[A-Za-z][A-Za-z0-9]*")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)*")
_MEASURE = re.compile(
    r"\d{1,3}\.\d{1,3}(?:MM|CM|KV|KVP|MAS|MA|T|S|MS|DEG|HU|KEV)?"
    r"|\d{1,3}(?:MM|CM|KV|KVP|MAS|MA|T|MS|DEG|HU|KEV)",
    re.IGNORECASE,
)


@cache
def known_terms() -> frozenset[str]:
    """The allowlisted terms, upper case."""
    text = resources.files("deidentify").joinpath("data/descriptor_terms.txt").read_text()
    lines = (line.strip() for line in text.splitlines())
    return frozenset(line.upper() for line in lines if line and not line.startswith("#"))


def clean_descriptor(text: str) -> str:
    """``text`` reduced to its known terms and measurements, joined by spaces.

    Returns an empty string when nothing known remains.

    Example
    -------
    >>> clean_descriptor("Axial 1.0mm bone, Quuxleigh MRN 4417093")
    'Axial 1.0mm bone'
    """
    terms = known_terms()
    tokens = _TOKEN.findall(text)
    kept = [
        token
        for index, token in enumerate(tokens)
        if token.upper() in terms or _is_measure(tokens, index)
    ]
    return " ".join(kept)


def _is_measure(tokens: list[str], index: int) -> bool:
    """A measurement: a number with a unit, or a bare one with no number beside it."""
    token = tokens[index]
    if not _MEASURE.fullmatch(token):
        return False
    if not _BARE_NUMBER.fullmatch(token):
        return True
    neighbours = tokens[max(index - 1, 0) : index] + tokens[index + 1 : index + 2]
    return not any(_BARE_NUMBER.fullmatch(other) for other in neighbours)
