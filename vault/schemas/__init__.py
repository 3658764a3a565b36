"""Schemas shipped with the vault: the DICOM Audit Message schema (PS3.15 A.5.1).

:data:`DICOM_AUDIT_MESSAGE_RNG` is the path of the RELAX NG (XML syntax) schema
that every exported DICOM Audit Message / IHE ATNA message validates against.
"""

from __future__ import annotations

from pathlib import Path

DICOM_AUDIT_MESSAGE_RNG = Path(__file__).with_name("dicom-audit-message.rng")
