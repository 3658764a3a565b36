"""Test plugin: the ``key_provider`` fixture, parametrized over every provider.

A test module that takes ``key_provider`` (or ``key_settings``, to build its
own) runs once per provider, with ids ``local``, ``pkcs11`` and ``transit``.
Each test gets its own KEKs: a fresh key file, or a label prefix / Transit
key name of its own on the session's token and server, so tests never see
each other's rotations.

:func:`keys_elsewhere` points settings where no keys are (a typo'd setting),
and :func:`key_environment` gives settings as a CLI process reads them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from crypto.keys import KeyProvider
from crypto.providers import build_key_provider
from vault.settings import KeySettings, LocalKeySettings

PROVIDERS = [
    pytest.param("local", id="local"),
    pytest.param("pkcs11", id="pkcs11", marks=pytest.mark.hsm),
    pytest.param("transit", id="transit", marks=pytest.mark.transit),
]


@pytest.fixture(params=PROVIDERS)
def key_settings(request: pytest.FixtureRequest, tmp_path: Path) -> KeySettings:
    """``keys`` settings for one provider, with KEKs private to this test."""
    unique = f"t{secrets.token_hex(6)}"
    if request.param == "pkcs11":
        base = request.getfixturevalue("softhsm_settings")
        section = base.model_copy(update={"key_label_prefix": f"{base.key_label_prefix}-{unique}"})
        return KeySettings(provider="pkcs11", pkcs11=section)
    if request.param == "transit":
        base = request.getfixturevalue("openbao_settings")
        section = base.model_copy(update={"key_name": f"{base.key_name}-{unique}"})
        return KeySettings(provider="transit", transit=section)
    path = tmp_path / "keys" / "kek.json"
    return KeySettings(provider="local", local=LocalKeySettings(path=path))


@pytest.fixture
def key_provider(key_settings: KeySettings) -> Iterator[KeyProvider]:
    """A ready provider built from ``key_settings``; closed after the test."""
    provider = build_key_provider(key_settings)
    yield provider
    provider.close()  # type: ignore[attr-defined]


def keys_elsewhere(settings: KeySettings) -> KeySettings:
    """The same provider pointed where no keys are: another file, label prefix or key name."""
    if settings.provider == "pkcs11":
        prefix = f"{settings.pkcs11.key_label_prefix}-typo"
        section = settings.pkcs11.model_copy(update={"key_label_prefix": prefix})
        return settings.model_copy(update={"pkcs11": section})
    if settings.provider == "transit":
        name = f"{settings.transit.key_name}-typo"
        section = settings.transit.model_copy(update={"key_name": name})
        return settings.model_copy(update={"transit": section})
    path = Path(str(settings.local.path)).with_name("elsewhere.json")
    return settings.model_copy(update={"local": LocalKeySettings(path=path)})


def key_environment(settings: KeySettings) -> dict[str, str]:
    """``settings`` as ``DICOM_VAULT_KEYS__...`` environment variables (secrets included)."""
    section = getattr(settings, settings.provider)
    environment = {"DICOM_VAULT_KEYS__PROVIDER": settings.provider}
    for name, value in section:
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        environment[f"DICOM_VAULT_KEYS__{settings.provider.upper()}__{name.upper()}"] = text
    return environment
