"""Shifting DICOM dates, times and date-times by a per-patient offset.

Values keep their precision: a partial value (``2023``, ``202305``, ``14``,
``1432``, a fraction of four digits) comes back with the same components,
computed from the middle of the range it names. A DT keeps its UTC offset
suffix (``&ZZXX``). ACR-NEMA forms (``2023.05.17``, ``14:32:07``) are read
and written back in the current form. Ranges (``A-B``) shift both ends.

A date and its time (Study Date and Study Time...) are shifted together, so
that a time crossing midnight moves its date along with it; see
:func:`shift_pair`. Anything that cannot be parsed raises ``ValueError``:
the caller must then drop the value, never keep it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta

_DA = re.compile(r"(\d{4})(?:\.?(\d{2})(?:\.?(\d{2}))?)?")
_TM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")


class _Parts:
    """A parsed value: a full datetime plus how many components were given."""

    __slots__ = ("fraction_digits", "given", "moment", "suffix")

    def __init__(self, moment: datetime, given: int, fraction_digits: int, suffix: str) -> None:
        self.moment = moment
        self.given = given  # components present: Y, M, D, h, m, s counted in order
        self.fraction_digits = fraction_digits
        self.suffix = suffix


def _moment(components: list[str | None], fraction: str | None) -> tuple[datetime, int]:
    """Fill missing components from the middle of the named range."""
    given = 0
    for part in components:
        if part is None:
            break
        given += 1
    middle = [None, 7, 2, 12, 30, 30]  # July 2nd, noon, half past, 30 s
    values = []
    for index, part in enumerate(components):
        values.append(int(part) if index < given and part is not None else middle[index])
    year, month, day, hour, minute, second = values
    micro = int((fraction or "0").ljust(6, "0")) if given == 6 else 0
    if given < 2:
        day = 2  # a year alone: anchor on July 2nd, the middle of the year
    elif given == 2:
        day = 15
    return datetime(year, month, day, hour, minute, second, micro), given  # type: ignore[arg-type]


def _parse_da(value: str) -> _Parts:
    match = _DA.fullmatch(value)
    if not match:
        raise ValueError("not a DA value")
    moment, given = _moment([*match.groups(), None, None, None], None)
    return _Parts(moment, given, 0, "")


def _parse_tm(value: str) -> _Parts:
    match = _TM.fullmatch(value)
    if not match:
        raise ValueError("not a TM value")
    hour, minute, second, fraction = match.groups()
    moment, given = _moment(["2000", "01", "01", hour, minute, second], fraction)
    return _Parts(moment, given, len(fraction or ""), "")


def _parse_dt(value: str) -> _Parts:
    match = _DT.fullmatch(value)
    if not match:
        raise ValueError("not a DT value")
    *components, fraction, suffix = match.groups()
    moment, given = _moment(components, fraction)
    return _Parts(moment, given, len(fraction or ""), suffix or "")


def _format(parts: _Parts, first: int, last: int) -> str:
    """Components ``first`` to ``last`` (0=year...5=second), up to the precision given."""
    moment = parts.moment
    fields = (
        f"{moment.year:04d}",
        f"{moment.month:02d}",
        f"{moment.day:02d}",
        f"{moment.hour:02d}",
        f"{moment.minute:02d}",
        f"{moment.second:02d}",
    )
    end = min(last, parts.given - 1)
    text = "".join(fields[first : end + 1])
    if end == 5 and parts.fraction_digits:
        text += "." + f"{moment.microsecond:06d}"[: parts.fraction_digits]
    return text + parts.suffix


def _shifted(parts: _Parts, offset: timedelta) -> _Parts:
    try:
        parts.moment = parts.moment + offset
    except OverflowError as exc:
        raise ValueError("date out of range after shifting") from exc
    return parts


def _each_end(value: str, shift: Callable[[str], str]) -> str:
    value = value.strip(" \0")
    if not value:
        return value
    if "-" in value:
        start, _, end = value.partition("-")
        return "-".join(shift(p) if p else p for p in (start, end))
    return shift(value)


def shift_date(value: str, offset: timedelta) -> str:
    """A DA value (or range) moved by ``offset``; ``ValueError`` if unparseable."""
    return _each_end(value, lambda v: _format(_shifted(_parse_da(v), offset), 0, 2))


def shift_time(value: str, offset: timedelta) -> str:
    """A TM value (or range) moved by ``offset`` modulo one day."""
    return _each_end(value, lambda v: _format(_shifted(_parse_tm(v), offset), 3, 5))


def shift_datetime(value: str, offset: timedelta) -> str:
    """A DT value moved by ``offset``, keeping its precision and UTC offset suffix."""
    value = value.strip(" \0")
    if not value:
        return value
    try:
        return _format(_shifted(_parse_dt(value), offset), 0, 5)
    except ValueError:
        start, sep, end = value.partition("-")
        if not sep or "-" in end:
            raise
        return "-".join(shift_datetime(p, offset) if p else p for p in (start, end))


def shift_pair(date: str, time: str, offset: timedelta) -> tuple[str, str]:
    """A date and its time shifted together: the date follows the time over midnight.

    Falls back to shifting each alone when the date is partial or either is
    empty or a range.
    """
    date, time = date.strip(" \0"), time.strip(" \0")
    if not time or "-" in date + time or len(date.replace(".", "")) != 8:
        return shift_date(date, offset), shift_time(time, offset)
    day, clock = _parse_da(date), _parse_tm(time)
    moved = (
        day.moment.replace(
            hour=clock.moment.hour,
            minute=clock.moment.minute,
            second=clock.moment.second,
            microsecond=clock.moment.microsecond,
        )
        + offset
    )
    day.moment = clock.moment = moved
    return _format(day, 0, 2), _format(clock, 3, 5)
