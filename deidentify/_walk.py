"""The table-driven walk: one pass over a parsed data set and every nested item.

Each element's action comes from the compiled table (:mod:`deidentify.table`);
the walk applies it and records the outcome. An element kept as it is is
copied as the bytes it came in, so pixel data, geometry and rescale values are
bit-exact and cost nothing to re-encode; only changed values are encoded.
Attributes the table does not list follow :meth:`Walk._unlisted`: technical
values are kept, but names, instance UIDs, dates, free text and the patient
module's own text never pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from pydicom.datadict import keyword_for_tag

from deidentify._codec import (
    UNDEFINED,
    Element,
    Level,
    MalformedError,
    Syntax,
    header_bytes,
    implicit_vr,
    item_bytes,
)
from deidentify._values import DEFAULT_CHARSETS, charsets_of, decode_text, encode_value
from deidentify.dates import shift_date, shift_datetime, shift_pair, shift_time
from deidentify.descriptors import clean_descriptor
from deidentify.outcome import AttributeChange, ReportAction
from deidentify.profile import PrivateTag
from deidentify.table import DATE_OF_TIME, TIME_OF_DATE, Action, Rules

_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC"})
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_SHIFTERS = {"DA": shift_date, "TM": shift_time, "DT": shift_datetime}
_DUMMY_BY_VR: dict[str, object] = {
    "PN": "ANONYMOUS",
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000D",
    "DS": "0",
    "IS": "0",
    "AT": 0,
    "UR": "https://removed.invalid/",
    **{vr: "REMOVED" for vr in ("LO", "LT", "SH", "ST", "UT", "UC", "CS", "AE")},
    **{vr: 0 for vr in ("US", "SS", "UL", "SL", "UV", "SV")},
    **{vr: 0.0 for vr in ("FL", "FD")},
}
_CHARSET_TAG = 0x00080005
_CODING_SCHEME, _CODE_MEANING, _STUDY_DATE = 0x00080102, 0x00080104, 0x00080020
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC"})
# Pairs whose time anchors a date given alone on the same day: Study first.
_DAY_ANCHORS = (_STUDY_DATE, *sorted(set(TIME_OF_DATE) - {_STUDY_DATE}))
# Keywords of UI attributes naming a kind of thing, never an instance.
_KIND_UID_WORDS = ("SOPClass", "TransferSyntax", "CodingScheme", "Context", "MappingResource")
# Coding schemes of PS3.16 Table 8-1 whose code meanings are published terms,
# not a site's own text; a meaning from any other scheme is cleaned.
STANDARD_CODING_SCHEMES = frozenset(
    {"DCM", "SCT", "SRT", "SNM3", "LN", "UCUM", "RADLEX", "FMA", "NCIT", "UMLS", "MDC", "ACR"}
    | {"I10", "I9C", "I10P", "ICD10", "C4", "C5", "CPT4", "NCDR", "BARI", "NEU", "UBERON"}
)

Chunk = tuple[int, bytes | memoryview]


@cache
def _name(tag: int) -> str:
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(slots=True)
class _Slot:
    """One element being processed, with the level it sits in."""

    element: Element
    level: Level
    path: str
    charsets: tuple[str, ...]

    @property
    def tag(self) -> int:
        return self.element.tag

    @property
    def vr(self) -> str:
        """The VR to write: the element's, or the dictionary's where it came as UN."""
        vr = self.element.vr
        return implicit_vr(self.tag) if vr == "UN" else vr


class Walk:
    """One instance's walk: rules, keyed replacements and the report being built.

    Parameters
    ----------
    buffer:
        The bytes the parsed levels point into.
    rules:
        The compiled table for the profile.
    private_safelist:
        Private attributes to keep.
    uid:
        Maps an original UID to its keyed replacement.
    pseudonym:
        The patient's pseudonym (for Patient's Name and Patient ID).
    offset:
        The patient's date shift, or ``None`` when dates are not shifted.
    """

    def __init__(
        self,
        buffer: bytes | memoryview,
        rules: Rules,
        private_safelist: frozenset[PrivateTag],
        uid: Callable[[str], str],
        pseudonym: str,
        offset: timedelta | None,
    ) -> None:
        self.buf = buffer
        self.view = memoryview(buffer)
        self.rules = rules
        self.safelist = private_safelist
        self.uid = uid
        self.pseudonym = pseudonym
        self.offset = offset
        self.report: list[AttributeChange] = []

    # --- levels ---------------------------------------------------------

    def level(
        self, level: Level, path: str = "", charsets: tuple[str, ...] = DEFAULT_CHARSETS
    ) -> list[Chunk]:
        """The de-identified elements of ``level``, as ``(tag, bytes)`` in tag order."""
        charset = level.by_tag.get(_CHARSET_TAG)
        if charset is not None and charset.length not in (0, UNDEFINED):
            charsets = charsets_of(self._raw(charset))
        creators = self._needed_creators(level) if self.safelist else set()
        chunks: list[Chunk] = []
        for element in level.elements:
            slot = _Slot(element, level, path, charsets)
            tag = element.tag
            if tag >> 16 & 1:
                action = self._private_action(slot, creators)
            elif tag & 0xFFFF == 0 or tag >> 16 == 0x0002:
                action = Action.REMOVE  # group lengths, stray file meta
            else:
                action = self.rules.action(tag) or self._unlisted(slot)
            chunk = self._apply(action, slot)
            if chunk is not None:
                chunks.append(chunk)
        chunks.sort(key=lambda c: c[0])
        return chunks

    def _apply(self, action: Action, slot: _Slot) -> Chunk | None:
        if slot.element.items is not None and action in {Action.KEEP, Action.RECURSE}:
            return self._sequence(slot)
        return _HANDLERS[action](self, slot)

    def _sequence(self, slot: _Slot) -> Chunk:
        """A kept sequence, each item walked with the same table."""
        element, level = slot.element, slot.level
        syntax = element.item_syntax or level.syntax
        prefix = f"{slot.path}{_name(slot.tag)}"
        body = b"".join(
            item_bytes(_join(self.level(item, f"{prefix}[{i}].", slot.charsets)), syntax)
            for i, item in enumerate(element.items or ())
        )
        vr = "SQ" if syntax == level.syntax else "UN"
        self._note(slot, ReportAction.KEPT)
        return slot.tag, header_bytes(slot.tag, vr, len(body), level.syntax) + body

    # --- helpers ----------------------------------------------------------

    def _raw(self, element: Element) -> bytes:
        if element.length == UNDEFINED:
            raise MalformedError("undefined length where a value is needed")
        return bytes(self.view[element.value_start : element.value_start + element.length])

    def _texts(self, slot: _Slot, element: Element | None = None) -> list[str]:
        element = element or slot.element
        return decode_text(self._raw(element), slot.vr, slot.charsets)

    def _put(self, slot: _Slot, value: object, vr: str | None = None) -> Chunk:
        vr = vr or slot.vr
        syntax: Syntax = slot.level.syntax
        data = encode_value(value, vr, syntax, slot.charsets)
        return slot.tag, header_bytes(slot.tag, vr, len(data), syntax) + data

    def _note(self, slot: _Slot, action: ReportAction) -> None:
        self.report.append(AttributeChange(f"{slot.path}{_name(slot.tag)}", slot.tag, action))

    # --- handlers, one per action ---------------------------------------

    def _keep(self, slot: _Slot) -> Chunk:
        self._note(slot, ReportAction.KEPT)
        return slot.tag, self.view[slot.element.start : slot.element.end]

    def _remove(self, slot: _Slot) -> None:
        self._note(slot, ReportAction.REMOVED)

    def _empty(self, slot: _Slot) -> Chunk:
        self._note(slot, ReportAction.EMPTIED)
        return self._put(slot, None, "SQ" if slot.element.items is not None else None)

    def _dummy(self, slot: _Slot) -> Chunk:
        vr = slot.vr
        if vr == "UI":
            return self._uid(slot)
        if slot.element.items is not None or vr == "SQ" or slot.element.length == UNDEFINED:
            return self._empty(slot)
        self._note(slot, ReportAction.REPLACED)
        if vr in _BINARY_VRS:  # zeros of the same length: the shape kept, the content gone
            return self._put(slot, bytes(slot.element.length), slot.element.vr)
        return self._put(slot, _DUMMY_BY_VR.get(vr, ""))

    def _uid(self, slot: _Slot) -> Chunk:
        if slot.vr != "UI" or slot.element.length == UNDEFINED:
            return self._empty(slot)
        values = [self.uid(v) for v in self._texts(slot)]
        self._note(slot, ReportAction.REPLACED)
        return self._put(slot, values, "UI")

    def _shift(self, slot: _Slot) -> Chunk:
        vr = slot.vr
        if self.offset is None or vr not in _SHIFTERS or slot.element.length == UNDEFINED:
            return self._empty(slot)
        try:
            values = self._shifted(slot, self._texts(slot), self.offset)
        except ValueError:
            return self._empty(slot)
        self._note(slot, ReportAction.SHIFTED)
        return self._put(slot, values)

    def _shifted(self, slot: _Slot, values: list[str], offset: timedelta) -> list[str]:
        vr = slot.vr
        partner_tag = TIME_OF_DATE.get(slot.tag) if vr == "DA" else DATE_OF_TIME.get(slot.tag)
        partner = slot.level.by_tag.get(partner_tag) if partner_tag else None
        paired = (
            len(values) == 1
            and partner is not None
            and partner.length not in (0, UNDEFINED)
            and self.rules.action(partner.tag) is Action.SHIFT
        )
        if paired and partner is not None:
            other = decode_text(self._raw(partner), "TM" if vr == "DA" else "DA", ())
            if len(other) == 1 and other[0]:
                if vr == "DA":
                    return [shift_pair(values[0], other[0], offset)[0]]
                return [shift_pair(other[0], values[0], offset)[1]]
        if vr == "DA" and len(values) == 1:
            anchor = self._time_of_same_day(slot.level, values[0])
            if anchor is not None:
                return [shift_pair(values[0], anchor, offset)[0]]
        return [_SHIFTERS[vr](v, offset) for v in values]

    def _time_of_same_day(self, level: Level, date: str) -> str | None:
        """The time of a date-and-time pair of ``level`` on ``date`` (Study's first).

        A date given without its time is shifted as that pair's date is, so
        that Series Date and Study Date of one day stay one day even when the
        offset's hours carry the study's time over midnight.
        """
        for date_tag in _DAY_ANCHORS:
            element, partner = level.by_tag.get(date_tag), level.by_tag.get(TIME_OF_DATE[date_tag])
            if element is None or partner is None or UNDEFINED in (element.length, partner.length):
                continue
            if self.rules.action(date_tag) is not Action.SHIFT or partner.length == 0:
                continue
            if decode_text(self._raw(element), "DA", ()) == [date.strip(" \0")]:
                times = decode_text(self._raw(partner), "TM", ())
                if len(times) == 1 and times[0]:
                    return times[0]
        return None

    def _clean(self, slot: _Slot) -> Chunk:
        vr = slot.vr
        if vr not in _TEXT_VRS or slot.element.length == UNDEFINED:
            return self._dummy(slot) if vr == "PN" else self._empty(slot)
        cleaned = [clean_descriptor(v) for v in self._texts(slot)]
        if not any(cleaned):
            return self._empty(slot)
        self._note(slot, ReportAction.CLEANED)
        return self._put(slot, cleaned)

    def _recurse(self, slot: _Slot) -> Chunk:
        return self._uid(slot)  # a U* attribute that turned out not to be a sequence

    def _pseudonymise(self, slot: _Slot) -> Chunk:
        self._note(slot, ReportAction.REPLACED)
        return self._put(slot, self.pseudonym, "PN" if slot.tag == 0x00100010 else "LO")

    # --- attributes the table does not list -----------------------------

    def _unlisted(self, slot: _Slot) -> Action:
        """The action for an attribute Table E.1-1 does not list.

        The table lists what the standard knew to be identifying; newer and
        rarer attributes are judged by what their kind can hold:

        * a person's name (PN) gets a dummy;
        * a date, time or date-time gets Study Date's action (shifted, kept
          under the full-dates option, or emptied), so that no unshifted value
          beside shifted ones gives the patient's offset away;
        * a UID is replaced by its keyed one unless it names a kind of thing
          (a SOP class, transfer syntax, coding scheme, context group): frame
          of reference and instance references stay consistent, and no
          original UID leads back to the hospital's archive (registry UIDs
          are never replaced, see :func:`deidentify.pseudonyms.keyed_uid`);
        * text and sequences of the patient group (0010) are removed: issuer
          qualifiers, alternative-calendar birth dates, group identifiers;
        * free text (LT, ST, UT, UC), the "Explanation" attributes and the
          meaning of a code from a scheme that is not a standard one are
          cleaned to known terms (:mod:`deidentify.descriptors`);
        * everything else (numbers, coded strings, technical strings such as
          Convolution Kernel) is kept byte for byte.
        """
        vr, tag = slot.vr, slot.tag
        if vr == "PN":
            return Action.DUMMY
        if vr in _SHIFTERS:  # as Study Date is: kept, shifted or emptied
            return self.rules.action(_STUDY_DATE) or Action.SHIFT
        if vr == "UI":
            return Action.KEEP if _names_a_kind(tag) else Action.UID
        if tag >> 16 == 0x0010 and (vr in _TEXT_VRS or slot.element.items is not None):
            return Action.REMOVE
        if vr in _FREE_TEXT_VRS or _name(tag).endswith("Explanation"):
            return Action.CLEAN
        if tag == _CODE_MEANING and not self._standard_scheme(slot.level):
            return Action.CLEAN
        return Action.KEEP

    def _standard_scheme(self, level: Level) -> bool:
        scheme = level.by_tag.get(_CODING_SCHEME)
        if scheme is None or scheme.length in (0, UNDEFINED):
            return False
        values = decode_text(self._raw(scheme), "SH", DEFAULT_CHARSETS)
        return len(values) == 1 and values[0].strip().upper() in STANDARD_CODING_SCHEMES

    # --- private attributes ---------------------------------------------

    def _private_action(self, slot: _Slot, creators: set[int]) -> Action:
        tag = slot.tag
        if tag in creators:
            return Action.KEEP
        if tag & 0xFFFF >= 0x1000 and self._safelisted(slot.level, tag):
            return Action.KEEP
        return Action.REMOVE

    def _safelisted(self, level: Level, tag: int) -> bool:
        if not self.safelist:
            return False
        element = tag & 0xFFFF
        creator = level.by_tag.get((tag & 0xFFFF0000) | (element >> 8))
        if creator is None or creator.length == UNDEFINED:
            return False
        name = decode_text(self._raw(creator), "LO", DEFAULT_CHARSETS)[0]
        return PrivateTag(name, tag >> 16, element & 0xFF) in self.safelist

    def _needed_creators(self, level: Level) -> set[int]:
        return {
            (e.tag & 0xFFFF0000) | ((e.tag & 0xFFFF) >> 8)
            for e in level.elements
            if e.tag >> 16 & 1 and e.tag & 0xFFFF >= 0x1000 and self._safelisted(level, e.tag)
        }


@cache
def _names_a_kind(tag: int) -> bool:
    """Whether UI attribute ``tag`` names a class, syntax, scheme or context."""
    name = _name(tag)
    return any(word in name for word in _KIND_UID_WORDS)


def _join(chunks: list[Chunk]) -> bytes:
    return b"".join(data for _, data in chunks)


_HANDLERS: dict[Action, Callable[[Walk, _Slot], Chunk | None]] = {
    Action.KEEP: Walk._keep,
    Action.REMOVE: Walk._remove,
    Action.EMPTY: Walk._empty,
    Action.DUMMY: Walk._dummy,
    Action.UID: Walk._uid,
    Action.SHIFT: Walk._shift,
    Action.CLEAN: Walk._clean,
    Action.RECURSE: Walk._recurse,
    Action.PSEUDONYM: Walk._pseudonymise,
}
