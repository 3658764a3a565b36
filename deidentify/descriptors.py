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
parts of a phone number.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_TOKEN = re.compile(r"\d+(?:\.\d+)?[A-Za-z]*|[A-Za-z][A-Za-z0-9]*")
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
    kept = [
        token
        for token in _TOKEN.findall(text)
        if token.upper() in terms or _MEASURE.fullmatch(token)
    ]
    return " ".join(kept)
