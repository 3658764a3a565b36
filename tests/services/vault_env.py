"""Test plugin: a whole vault on every deployment, and a case to ingest into.

``vault`` runs a test on each deployment the product supports: ``embedded``
(filesystem store + SQLite catalog) and ``scaled`` (SeaweedFS S3 + PostgreSQL),
each with every key provider (through ``key_settings``): six combinations.
``embedded_vault`` is the embedded default alone, with the local key file,
for tests whose subject does not depend on the deployment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dicom_ingest import IngestOrigin, IngestPipeline, ValidationPolicy
from vault.admin import create_case, get_or_create_organisation
from vault.clock import FrozenClock
from vault.core import Vault, open_vault
from vault.settings import KeySettings, Settings

DEPLOYMENTS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("scaled", id="scaled", marks=[pytest.mark.s3, pytest.mark.postgres]),
]


def _settings(tmp_path: Path, keys: KeySettings, catalog_url: str | None) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", keys=keys)
    if catalog_url:
        settings.catalog.url = catalog_url
    return settings


@pytest.fixture(params=DEPLOYMENTS)
def vault(
    request: pytest.FixtureRequest, tmp_path: Path, key_settings: KeySettings
) -> Iterator[Vault]:
    """A vault on one deployment with one key provider (see module docstring)."""
    if request.param == "scaled":
        settings = _settings(tmp_path, key_settings, request.getfixturevalue("postgres_url"))
        store = request.getfixturevalue("s3_store")
    else:
        settings = _settings(tmp_path, key_settings, None)
        store = None
    opened = open_vault(settings, clock=FrozenClock(), store=store)
    yield opened
    opened.close()


@pytest.fixture
def embedded_vault(tmp_path: Path) -> Iterator[Vault]:
    """The embedded default: filesystem, SQLite, local key file."""
    opened = open_vault(Settings(data_dir=tmp_path / "data"), clock=FrozenClock())
    yield opened
    opened.close()


@dataclass(frozen=True)
class CaseContext:
    vault: Vault
    pipeline: IngestPipeline
    origin: IngestOrigin
    case_id: str


def make_case(vault: Vault, reference: str = "CASE-0001") -> CaseContext:
    with vault.catalog.session() as session:
        organisation = get_or_create_organisation(session, "Test Hospital")
        case = create_case(session, reference, organisation)
        origin = IngestOrigin("cli", "cli", organisation.id, case.id)
    pipeline = IngestPipeline(vault, ValidationPolicy.from_settings(vault.settings.policy))
    return CaseContext(vault, pipeline, origin, case.id)


@pytest.fixture
def case(vault: Vault) -> CaseContext:
    """An open case of a test hospital in ``vault``, and a pipeline to ingest into it."""
    return make_case(vault)


@pytest.fixture
def embedded_case(embedded_vault: Vault) -> CaseContext:
    return make_case(embedded_vault)


def without_vault_settings() -> dict[str, str]:
    """This process's environment without any ``DICOM_VAULT_`` setting, for a child process."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DICOM_VAULT_")}


@pytest.fixture
def no_vault_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every ``DICOM_VAULT_`` setting from this process's environment for a test."""
    for name in list(os.environ):
        if name.startswith("DICOM_VAULT_"):
            monkeypatch.delenv(name)
