"""Test-session service: a private SoftHSM2 token for the pkcs11 key provider.

The token is created once per session by ``infra/softhsm-init.sh`` in a
temporary directory, with ``SOFTHSM2_CONF`` pointed at it for the session
(the PKCS#11 library reads it when first loaded, in this process).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.services._require import missing_service
from vault.settings import Pkcs11KeySettings

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
INIT_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "softhsm-init.sh"
TOKEN_LABEL = "dicom-vault-test"


@pytest.fixture(scope="session")
def softhsm_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pkcs11KeySettings]:
    """Settings for a freshly initialised SoftHSM2 token, valid for the session."""
    if shutil.which("softhsm2-util") is None:
        missing_service("softhsm2", "softhsm2-util is not installed (apt install softhsm2)")
    if not SOFTHSM_MODULE.exists():
        missing_service("softhsm2", f"PKCS#11 module {SOFTHSM_MODULE} is missing")
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        missing_service("softhsm2", "the python-pkcs11 library is not installed")
    directory = tmp_path_factory.mktemp("softhsm")
    user_pin = secrets.token_hex(8)
    environment = {
        **os.environ,
        "DICOM_VAULT_HSM_USER_PIN": user_pin,
        "DICOM_VAULT_HSM_SO_PIN": secrets.token_hex(8),
    }
    environment.pop("SOFTHSM2_CONF", None)
    command = [
        "bash", str(INIT_SCRIPT), "--dir", str(directory),
        "--label", TOKEN_LABEL, "--module", str(SOFTHSM_MODULE),
    ]  # fmt: skip
    result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"softhsm-init.sh failed: {result.stderr.strip()}", pytrace=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(directory / "softhsm2.conf"))
        yield Pkcs11KeySettings(
            module=SOFTHSM_MODULE,
            token_label=TOKEN_LABEL,
            user_pin=SecretStr(user_pin),
            key_label_prefix="dicom-vault-test-kek",
        )
