"""Every attribute of PS3.15 Table E.1-1 gets the action the profile and its options prescribe.

The expectation is computed here from the table row and the standard's code
semantics, independently of the engine's resolver: an action code allows a
set of outcomes (X removed; Z emptied; D replaced by a dummy; U a keyed UID;
K kept; C shifted for dates under the modified-dates option, cleaned for
text; a compound code allows any of its members), and the observed outcome
must be one of them.
"""

from __future__ import annotations

import json
from importlib import resources

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from deidentify import Profile
from deidentify.table import TableRow, load_table
from dicom_ingest.synthetic import make_ct_series
from tests.deidentify_support import make_engine

SECRET = "Quuxleigh"
ORIGINAL_UID = "1.2.826.0.1.3680043.8.498.4242"
TEXT = f"AXIAL BONE {SECRET} 4417093"
VALUES: dict[str, object] = {
    "AE": "QXAE",
    "AS": "042Y",
    "CS": "QXCODE",
    "DA": "20230517",
    "DS": "12.5",
    "DT": "20230517143207.25",
    "IS": "42",
    "LO": TEXT,
    "LT": TEXT,
    "OB": b"\x01\x02\x03\x04",
    "PN": f"{SECRET}^Marguerite",
    "SH": "QXSH",
    "ST": TEXT,
    "TM": "143207.25",
    "UC": TEXT,
    "UI": ORIGINAL_UID,
    "UN": b"\x01\x02",
    "UR": "http://quux.example/x",
    "US": 3,
    "UT": TEXT,
}
MEMBERS = {
    "X": {"removed"},
    "Z": {"emptied"},
    "D": {"replaced"},
    "U": {"uid"},
    "K": {"kept"},
    "X/Z": {"removed", "emptied"},
    "X/D": {"removed", "replaced"},
    "Z/D": {"emptied", "replaced"},
    "X/Z/D": {"removed", "emptied", "replaced"},
    "X/Z/U*": {"removed", "emptied", "uid"},
}
PSEUDONYM_TAGS = {"00100010", "00100020"}
PROFILES = {
    "vault-default": Profile(),
    "basic-only": Profile(
        retain_modified_dates=False,
        retain_patient_characteristics=False,
        clean_descriptors=False,
    ),
}


def _vr(row: TableRow) -> str:
    if row.vr:
        return row.vr
    if row.name.endswith("Sequence"):
        return "SQ"
    return "DT" if row.name.endswith("DateTime") else "UR" if row.name.endswith("URI") else "LO"


def expected(row: TableRow, profile: Profile) -> set[str]:
    """The outcomes PS3.15 allows for ``row`` under ``profile``."""
    vr = _vr(row)
    codes = [row.options[o] for o in profile.options if o in row.options]
    if row.tag in PSEUDONYM_TAGS:
        return {"replaced"}  # Z and Z/D permit a non-zero dummy: the pseudonym
    if "K" in codes:
        return {"kept"}
    if "C" in codes and vr != "SQ":
        dated = profile.retain_modified_dates and row.options.get("retain_modified_dates") == "C"
        if dated:  # a date, time or datetime is shifted; anything else cannot be: emptied
            return {"shifted"} if vr in {"DA", "TM", "DT"} else {"emptied", "removed"}
        return {"cleaned", "emptied"}
    allowed = set(MEMBERS[row.basic])
    if "replaced" in allowed and vr == "SQ":
        allowed.add("emptied")  # a dummy sequence is one with no items
    if "replaced" in allowed and vr == "UI":
        allowed.add("uid")  # a dummy UID: the keyed one keeps references consistent
    return allowed


def _dataset_with(row: TableRow) -> Dataset:
    ds = next(make_ct_series(1, rows=4, columns=4))
    for keyword in ("PatientName", "StudyDescription", "SeriesDescription"):
        del ds[keyword]  # the row under test must be the only identifying attribute
    tag, vr = int(row.tag, 16), _vr(row)
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPClassUID = CTImageStorage
        item.ReferencedSOPInstanceUID = ORIGINAL_UID
        ds.add_new(tag, "SQ", [item])
    elif row.tag.startswith("0002"):
        ds.file_meta.add_new(tag, vr, ORIGINAL_UID)
    else:
        ds.add_new(tag, vr, VALUES[vr])
    return ds


def observed(row: TableRow, before: Dataset, after: Dataset) -> str:
    tag = int(row.tag, 16)
    source, target = (
        (before.file_meta, after.file_meta)
        if row.tag.startswith("0002")
        else (
            before,
            after,
        )
    )
    if tag not in target:
        return "removed"
    old, new = source[tag].value, target[tag].value
    if _vr(row) == "SQ":
        if len(new) == 0:
            return "emptied"
        inner = new[0].get("ReferencedSOPInstanceUID", "")
        return "uid" if inner.startswith("2.25.") else "kept"
    if new in (None, "", b"", []):
        return "emptied"
    if new == old:
        return "kept"
    if _vr(row) == "UI":
        return "uid" if str(new).startswith("2.25.") and len(str(new)) <= 64 else "replaced"
    if _vr(row) in {"DA", "TM", "DT"} and str(new)[:2].isdigit() and len(str(new)) == len(old):
        return "shifted" if str(new) != "19000101" else "replaced"
    if isinstance(new, str) and set(new.split()) <= set(TEXT.split()) and SECRET not in new:
        return "cleaned"
    return "replaced"


# Repeating groups are tested below; command elements (group 0000) cannot be
# written in a Part 10 file at all, so no stored instance carries them.
ROWS = [row for row in load_table() if "x" not in row.tag and not row.tag.startswith("0000")]


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@pytest.mark.parametrize("row", ROWS, ids=[f"{r.tag}-{r.name}" for r in ROWS])
class TestEveryTableAttributeGetsItsAction:
    def test_attribute_gets_an_action_the_profile_allows(
        self, row: TableRow, profile_name: str
    ) -> None:
        profile = PROFILES[profile_name]
        ds = _dataset_with(row)
        outcome = make_engine(profile).deidentify(ds)
        if outcome.quarantine is not None:
            assert row.name == "Encapsulated Document"
            assert outcome.quarantine.code == "encapsulated-document"
            return
        assert outcome.dataset is not None
        assert observed(row, ds, outcome.dataset) in expected(row, profile)


class TestRepeatingGroups:
    @pytest.mark.parametrize("group", [0x5000, 0x501E])
    def test_curve_attributes_are_removed(self, group: int) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.add_new(group << 16 | 0x2500, "LO", "curve label")
        out = make_engine().deidentify(ds).dataset
        assert out is not None and (group << 16 | 0x2500) not in out

    @pytest.mark.parametrize("element", [0x3000, 0x4000, 0x0022, 0x1500])
    def test_overlay_plane_attributes_are_removed(self, element: int) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        vr = {0x3000: "OW", 0x4000: "LT"}.get(element, "LO")
        value = bytes(8) if vr == "OW" else f"note {SECRET}"
        ds.add_new(0x60020000 | element, vr, value)
        out = make_engine().deidentify(ds).dataset
        assert out is not None and (0x60020000 | element) not in out


class TestTableProvenance:
    def test_the_table_names_its_sources_edition_and_licences(self) -> None:
        text = resources.files("deidentify").joinpath("data/table_e1_1.json").read_text()
        document = json.loads(text)
        assert "scripts/build_table_e1_1.py" in document["generated_by"]
        assert "2026c" in document["edition"]
        licences = " ".join(s["licence"] for s in document["sources"])
        assert "BSD-3-Clause" in licences and "MIT" in licences

    def test_the_table_covers_the_core_identifiers(self) -> None:
        tags = {row.tag for row in load_table()}
        for tag in ("00100010", "00100020", "00100030", "0020000D", "00080018", "60xx3000"):
            assert tag in tags
        assert len(tags) > 600


class TestUnlistedAttributes:
    def test_an_unlisted_person_name_gets_a_dummy(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.EvaluatorName = f"{SECRET}^Marguerite"  # (0014,2006): not in Table E.1-1
        out = make_engine().deidentify(ds).dataset
        assert out is not None and out.EvaluatorName == "ANONYMOUS"

    def test_an_unlisted_technical_attribute_is_kept_byte_for_byte(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.ConvolutionKernel = "B30f"
        ds.AnatomicalOrientationType = "BIPED"  # group 0010, but a coded term
        out = make_engine().deidentify(ds).dataset
        assert out is not None and out.ConvolutionKernel == "B30f"
        assert out.AnatomicalOrientationType == "BIPED"

    def test_unlisted_patient_text_and_sequences_are_removed(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.PatientBirthDateInAlternativeCalendar = "14380229"
        ds.PatientDeathDateInAlternativeCalendar = "14450101"
        issuer = Dataset()
        issuer.UniversalEntityID = f"{SECRET}-PQX4417093"
        ds.IssuerOfPatientIDQualifiersSequence = [issuer]
        out = make_engine().deidentify(ds).dataset
        assert out is not None
        for keyword in (
            "PatientBirthDateInAlternativeCalendar",
            "PatientDeathDateInAlternativeCalendar",
            "IssuerOfPatientIDQualifiersSequence",
        ):
            assert keyword not in out, keyword

    def test_unlisted_instance_uids_are_replaced_like_the_listed_ones(self) -> None:
        first, second = make_ct_series(2, rows=4, columns=4)
        second.MultiFrameSourceSOPInstanceUID = first.SOPInstanceUID
        second.TableFrameOfReferenceUID = first.FrameOfReferenceUID
        reference = Dataset()
        reference.ReferencedSOPClassUID = CTImageStorage
        reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
        second.SourceImageSequence = [reference]
        engine = make_engine()
        before = engine.deidentify(first).dataset
        after = engine.deidentify(second).dataset
        assert before is not None and after is not None
        assert after.MultiFrameSourceSOPInstanceUID == before.SOPInstanceUID
        assert after.TableFrameOfReferenceUID == before.FrameOfReferenceUID
        assert after.SourceImageSequence[0].ReferencedSOPClassUID == CTImageStorage
        assert after.SOPClassUID == CTImageStorage

    def test_an_unlisted_date_time_is_shifted_with_the_listed_ones(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.AcquisitionDateTime = "20240301101500"  # listed: shifted
        ds.StudyUpdateDateTime = "20240301101500"  # not listed
        out = make_engine().deidentify(ds).dataset
        assert out is not None
        assert out.StudyUpdateDateTime == out.AcquisitionDateTime != "20240301101500"

    @pytest.mark.parametrize("study_time", ["000100", "120000", "235930"])
    def test_a_date_with_its_time_and_one_without_stay_on_the_same_day(
        self, study_time: str
    ) -> None:
        engine = make_engine()
        for number in range(20):  # patients, each with an offset of its own
            ds = next(make_ct_series(1, rows=4, columns=4))
            ds.PatientID = f"P{number}"
            ds.StudyDate, ds.StudyTime, ds.SeriesDate = "20240301", study_time, "20240301"
            del ds.SeriesTime
            out = engine.deidentify(ds).dataset
            assert out is not None and out.SeriesDate == out.StudyDate != "20240301"

    def test_an_unlisted_date_time_is_kept_with_full_dates(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.StudyUpdateDateTime = "20240301101500"
        profile = Profile(retain_modified_dates=False, retain_full_dates=True)
        out = make_engine(profile).deidentify(ds).dataset
        assert out is not None and out.StudyUpdateDateTime == "20240301101500"

    def test_unlisted_free_text_and_explanations_are_cleaned(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        ds.TextValue = TEXT
        ds.WindowCenterWidthExplanation = f"BONE {SECRET}"
        out = make_engine().deidentify(ds).dataset
        assert out is not None
        assert (out.TextValue, out.WindowCenterWidthExplanation) == ("AXIAL BONE", "BONE")

    def test_a_local_code_meaning_is_cleaned_and_a_standard_one_kept(self) -> None:
        ds = next(make_ct_series(1, rows=4, columns=4))
        local, standard = Dataset(), Dataset()
        local.CodeValue, local.CodingSchemeDesignator = "CTKNEE", "99ORBIS"
        local.CodeMeaning = f"CT KNEE L {SECRET} PQX4417093"
        standard.CodeValue, standard.CodingSchemeDesignator = "72696002", "SCT"
        standard.CodeMeaning = "Knee region structure"
        ds.ProcedureCodeSequence = [local]
        ds.AnatomicRegionSequence = [standard]
        out = make_engine().deidentify(ds).dataset
        assert out is not None
        assert out.ProcedureCodeSequence[0].CodeMeaning == "CT KNEE L"
        assert out.AnatomicRegionSequence[0].CodeMeaning == "Knee region structure"
