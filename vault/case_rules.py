"""The rules a case sets for new data, shared by every way data enters one.

A closed case takes nothing new (:func:`require_open`): no upload, no
``ingest``, no inbox study filed under it (the receiver's case look-up asks
for open cases in its own query).

A case (an implant order) holds the studies of one patient unless an
administrator allowed more (``Case.allow_multiple_patients``). Patients are
compared by their keyed digest (``Study.patient_digest``), never in clear.
The statement is built once at import.
"""

from __future__ import annotations

from sqlalchemy import Connection, bindparam, exists, select

from vault.catalog.models import Case, Study
from vault.errors import CaseClosed, NotFound

_cases, _studies = Case.__table__, Study.__table__
_CASE_RULES = select(
    _cases.c.allow_multiple_patients,
    exists()
    .where(_studies.c.case_id == _cases.c.id, _studies.c.patient_digest != bindparam("patient"))
    .label("other_patient"),
).where(_cases.c.id == bindparam("case"))


def other_patient_in_case(connection: Connection, case_id: str | None, patient: str | None) -> bool:
    """Whether case ``case_id`` holds a study of a patient other than digest ``patient``
    and does not allow several (False for no case).

    Raises:
        NotFound: no such case.
    """
    if case_id is None:
        return False
    row = connection.execute(_CASE_RULES, {"case": case_id, "patient": patient}).first()
    if row is None:
        raise NotFound("no such case")
    return not row.allow_multiple_patients and bool(row.other_patient)


def require_open(case: Case) -> None:
    """Refuse new data for ``case`` unless it is open.

    Raises:
        CaseClosed: the case is closed.
    """
    if case.status != "open":
        raise CaseClosed("this case is not open")
