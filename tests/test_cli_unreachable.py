"""A service the deployment names but that cannot be used: one line, exit status 2.

The operator's first day on the scale-out configuration: a catalog URL with the
database server down, an S3 endpoint nobody listens on, an HSM token the
PKCS#11 module does not see (``SOFTHSM2_CONF`` left out of the unit). Every
command, ``scp`` and ``serve`` included, names the service and the settings to
check on one line and exits with status 2, as it does for an invalid setting;
it printed a traceback of 130 to 560 lines and exited with 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.dicom_peers import free_port
from vault.settings import Pkcs11KeySettings

CLI = Path(sys.executable).with_name("dicom-vault")


def run(tmp_path: Path, *argv: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DICOM_VAULT_DATA_DIR": str(tmp_path / "var"),
        "DICOM_VAULT_SCP__PORT": str(free_port()),
        "DICOM_VAULT_API__PORT": str(free_port()),
        **settings,
    }
    return subprocess.run(
        [str(CLI), *argv], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def assert_one_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines == [expected], result.stderr[-2000:]


class TestCatalogUnreachable:
    @pytest.mark.parametrize("argv", [["list"], ["scp"], ["serve", "--no-scp"]])
    def test_commands_name_the_catalog(self, tmp_path: Path, argv: list[str]) -> None:
        url = f"postgresql+psycopg://vault@127.0.0.1:{free_port()}/vault"
        result = run(tmp_path, *argv, DICOM_VAULT_CATALOG__URL=url)
        assert_one_line(
            result,
            "error: cannot use the catalog: no connection (OperationalError);"
            " check catalog.url and that it runs",
        )


class TestObjectStoreUnreachable:
    def test_list_names_the_object_store(self, tmp_path: Path) -> None:
        result = run(
            tmp_path,
            "list",
            DICOM_VAULT_STORE__KIND="s3",
            DICOM_VAULT_STORE__S3__ENDPOINT=f"127.0.0.1:{free_port()}",
            DICOM_VAULT_STORE__S3__RETRIES="0",
        )
        assert_one_line(
            result,
            "error: cannot use the object store: the object store could not create the bucket;"
            " check [store] and that it runs",
        )


@pytest.mark.hsm
class TestKeyProviderUnusable:
    @pytest.mark.parametrize("argv", [["list"], ["scp"]])
    def test_a_token_the_module_does_not_see(
        self, tmp_path: Path, softhsm_settings: Pkcs11KeySettings, argv: list[str]
    ) -> None:
        result = run(
            tmp_path,
            *argv,
            DICOM_VAULT_KEYS__PROVIDER="pkcs11",
            DICOM_VAULT_KEYS__PKCS11__MODULE=str(softhsm_settings.module),
            DICOM_VAULT_KEYS__PKCS11__TOKEN_LABEL="no-such-token",
            DICOM_VAULT_KEYS__PKCS11__USER_PIN=softhsm_settings.user_pin.get_secret_value(),
        )
        assert result.stdout.strip() in ("", f"DICOM receiver DICOMVAULT on {_bind(result)}")
        assert_one_line(
            result,
            "error: cannot use the key provider: the module sees no HSM token labelled"
            " 'no-such-token': check keys.pkcs11.token_label (and SOFTHSM2_CONF in the"
            " service's environment for SoftHSM)",
        )


def _bind(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().rsplit(" ", 1)[-1]
