"""The inner session of ``test_operator_environment``: what a test sees of the shell.

Not collected by a normal run (its name is not ``test_*``); the outer test
runs pytest on this file alone, with a deployment's variables set.
"""

from __future__ import annotations

import os
from pathlib import Path

from vault.settings import Settings

INNER = "DICOM_VAULT_TEST_INNER_RUN"


def test_inner_session_sees_no_operator_setting(tmp_path: Path) -> None:
    assert sorted(n for n in os.environ if n.startswith("DICOM_VAULT_")) == [INNER]
    assert Settings(data_dir=tmp_path).catalog.url.startswith("sqlite:///")
