"""The settings object: read from a TOML file and the environment, and strict about both.

A misspelt key is refused in every section (a silently ignored
``tls_certificate`` would leave DICOM TLS off, a ``[keys] provder`` the local
key file on), as is a ``DICOM_VAULT_CONFIG`` naming a file that is missing or
not TOML (the service would otherwise start on the embedded defaults). The
problems are named, setting by setting, without their values.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.services.vault_env import without_vault_settings
from vault.mac_purposes import RESERVED as RESERVED_MAC_PURPOSES
from vault.settings import InvalidSettings, Section, Settings, load_settings

CLI = Path(sys.executable).with_name("dicom-vault")
# planted in the files and variables below, to prove it is never echoed
SECRET = "pin-4417-never-printed"

EXAMPLE = """
data_dir = "{data}"
log_level = "warning"
[catalog]
url = "postgresql+psycopg://vault@db.internal/vault"
[store]
kind = "s3"
[store.s3]
endpoint = "s3.internal:8333"
access_key = "vault"
secret_key = "s3-secret"
bucket = "studies"
[keys]
provider = "pkcs11"
[keys.pkcs11]
token_label = "vault-hsm"
user_pin = "1234"
[scp]
ae_title = "IMPLANTS"
processes = 2
[uploads]
browser_stall_seconds = 45
"""


# No setting of the environment running the tests leaks into these.
pytestmark = pytest.mark.usefixtures("no_vault_settings")


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "vault.toml"
    path.write_text(text)
    monkeypatch.setenv("DICOM_VAULT_CONFIG", str(path))
    return path


def _sections(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    found = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found.append((prefix + name, kind))
            found += _sections(kind, f"{prefix}{name}.")
    return found


class TestReadingTheConfiguration:
    def test_a_toml_file_configures_every_section_it_names(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _config(tmp_path, monkeypatch, EXAMPLE.format(data=tmp_path))
        settings = load_settings()
        assert settings.data_dir == tmp_path
        assert settings.catalog.url == "postgresql+psycopg://vault@db.internal/vault"
        assert (settings.store.kind, settings.store.s3.bucket) == ("s3", "studies")
        assert settings.store.s3.secret_key.get_secret_value() == "s3-secret"
        assert (settings.keys.provider, settings.keys.pkcs11.token_label) == ("pkcs11", "vault-hsm")
        assert (settings.scp.ae_title, settings.scp.processes) == ("IMPLANTS", 2)
        assert settings.uploads.browser_stall_seconds == 45

    def test_the_environment_overrides_the_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _config(tmp_path, monkeypatch, EXAMPLE.format(data=tmp_path))
        monkeypatch.setenv("DICOM_VAULT_SCP__AE_TITLE", "OTHER")
        assert load_settings().scp.ae_title == "OTHER"


class TestMistakesAreRefused:
    def test_every_section_refuses_keys_it_does_not_know(self) -> None:
        sections = _sections(Settings)
        assert len(sections) >= 19
        for name, section in sections:
            assert issubclass(section, Section), name
            assert section.model_config.get("extra") == "forbid", name
        assert Settings.model_config.get("extra") == "forbid"

    @pytest.mark.parametrize(
        ("section", "key"),
        [
            ("scp", "tls_certificate"),
            ("keys", "provder"),
            ("keys.pkcs11", "user_pn"),
            ("store.s3", "secret"),
            ("audit.syslog", "hostname"),
        ],
    )
    def test_a_misspelt_key_in_a_file_is_named_and_its_value_is_not(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str
    ) -> None:
        _config(tmp_path, monkeypatch, f'[{section}]\n{key} = "{SECRET}"\n')
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        assert raised.value.problems == [
            f"{section}.{key}: unknown setting (check its spelling and section)"
        ]
        assert SECRET not in str(raised.value)

    def test_a_misspelt_environment_variable_is_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("DICOM_VAULT_SCP__TLS_CERTIFICATE", SECRET)
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        assert raised.value.problems == [
            "scp.tls_certificate: unknown setting (check its spelling and section)"
        ]

    def test_an_invalid_value_is_named_without_the_value(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        _config(tmp_path, monkeypatch, f'[api]\nport = "{SECRET}"\n')
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        (problem,) = raised.value.problems
        assert problem.startswith("api.port: Input should be a valid integer")
        assert SECRET not in problem

    def test_a_config_file_that_is_missing_is_refused_not_read_as_empty(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        missing = tmp_path / "etc" / "vault.toml"
        monkeypatch.setenv("DICOM_VAULT_CONFIG", str(missing))
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        assert raised.value.problems == [
            f"DICOM_VAULT_CONFIG names {missing}: No such file or directory"
        ]

    def test_a_config_file_that_is_not_toml_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = _config(tmp_path, monkeypatch, "[scp\nport = 104\n")
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        (problem,) = raised.value.problems
        assert problem.startswith(f"DICOM_VAULT_CONFIG names {path}, not valid TOML")


class TestMacKeyPurposes:
    @pytest.mark.parametrize("purpose", sorted(RESERVED_MAC_PURPOSES))
    def test_a_pseudonym_key_purpose_the_vault_keeps_for_itself_is_refused(
        self, monkeypatch: pytest.MonkeyPatch, purpose: str
    ) -> None:
        monkeypatch.setenv("DICOM_VAULT_DEIDENTIFY__PSEUDONYM_KEY_PURPOSE", purpose)
        with pytest.raises(InvalidSettings) as raised:
            load_settings()
        (problem,) = raised.value.problems
        assert problem.startswith(
            "deidentify.pseudonym_key_purpose: the vault keeps this MAC key purpose for itself"
        )

    def test_a_pseudonym_key_purpose_of_its_own_is_taken(self) -> None:
        settings = Settings(deidentify={"pseudonym_key_purpose": "pseudonym-2026"})
        assert settings.deidentify.pseudonym_key_purpose == "pseudonym-2026"

    def test_every_purpose_the_code_asks_a_mac_key_for_is_reserved_or_the_setting(self) -> None:
        root = Path(__file__).resolve().parents[1]
        used = set()
        for package in ("crypto", "deidentify", "dicom_ingest", "vault"):
            for path in (root / package).rglob("*.py"):
                module = ".".join(path.relative_to(root).with_suffix("").parts)
                used |= set(_mac_key_purposes(module, path))
        assert "catalog-index" in used
        assert used - {"pseudonym_key_purpose"} <= RESERVED_MAC_PURPOSES


def _mac_key_purposes(module: str, path: Path) -> Iterator[str]:
    """The purposes ``module`` passes to ``mac_key``: constants resolved, the setting by name."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "mac_key"):
            continue
        (argument,) = node.args
        names = ast.unparse(argument).split(".")
        if names[-1] == "pseudonym_key_purpose":
            yield names[-1]
            continue
        value: object = importlib.import_module(module)
        for name in names:
            value = getattr(value, name)
        assert isinstance(value, str), (module, names)
        yield value


class TestTheCommandSaysWhatIsWrong:
    def test_a_command_names_each_problem_on_one_line_and_exits_2(self, tmp_path: Path) -> None:
        config = tmp_path / "vault.toml"
        config.write_text(
            f'[scp]\ntls_certificate = "/etc/x.pem"\n[keys.pkcs11]\nuser_pn = "{SECRET}"\n'
        )
        env = without_vault_settings()
        env |= {"DICOM_VAULT_CONFIG": str(config), "DICOM_VAULT_DATA_DIR": str(tmp_path / "var")}
        done = subprocess.run(
            [str(CLI), "list"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "error: invalid configuration: keys.pkcs11.user_pn: unknown setting"
            " (check its spelling and section)",
            "error: invalid configuration: scp.tls_certificate: unknown setting"
            " (check its spelling and section)",
        ]
        assert SECRET not in done.stdout + done.stderr
        assert not (tmp_path / "var").exists()  # nothing was opened or created
