"""A test run started from a shell set up for a deployment stays out of it.

Settings read ``DICOM_VAULT_*`` variables and ``DICOM_VAULT_CONFIG``; tests
that build ``Settings(data_dir=...)`` or start ``dicom-vault`` with
``{**os.environ, ...}`` would otherwise use the deployment's catalog, bucket
and key provider (seen: a test's organisation, case and study in an
operator's PostgreSQL catalog). ``tests/conftest.py`` removes them; the
inner session (``tests/operator_environment_inner.py``) shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.operator_environment_inner import INNER


def test_a_deployments_configuration_does_not_reach_a_test_session(tmp_path: Path) -> None:
    operator = tmp_path / "vault.toml"
    operator.write_text('[catalog]\nurl = "postgresql+psycopg://vault@db.invalid/production"\n')
    env = {
        **os.environ,
        "DICOM_VAULT_CONFIG": str(operator),
        "DICOM_VAULT_STORE__KIND": "s3",
        INNER: "1",
    }
    inner = str(Path(__file__).with_name("operator_environment_inner.py"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", inner],
        env=env,
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
