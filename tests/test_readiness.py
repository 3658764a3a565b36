"""``/readyz``: the catalog, the object store and the key provider answer, or 503 says which not.

Each failure is a real one where it can be made real here: the object
store's directory taken away, the key file taken away. The catalog's
connection failing is injected (a broken engine), and so is a dependency
that never answers. Every time, ``/healthz`` still answers, and the probe
names components only: no path, error text or setting reaches the caller.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from vault import readiness
from vault.api.app import create_app
from vault.clock import FrozenClock
from vault.core import Vault
from vault.settings import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path / "data"), clock=FrozenClock())
    with TestClient(app) as served:
        # A new store makes its 256 fan-out directories, with fsyncs, at its
        # first writer: up to seconds on a loaded disk, which the store check
        # would otherwise pay inside a probe's deadline. Made here, untimed.
        app.state.vault.store.open_writer().abort()
        yield served


@pytest.fixture
def vault(client: TestClient) -> Vault:
    return client.app.state.vault  # type: ignore[attr-defined,no-any-return]


def _ready(client: TestClient, expected: int) -> dict[str, str]:
    response = client.get("/readyz")
    assert response.status_code == expected, response.text
    assert client.get("/healthz").status_code == 200  # the process still answers
    return response.json()["checks"]


class TestReadiness:
    def test_a_working_vault_is_ready(self, client: TestClient) -> None:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ready",
            "checks": {"catalog": "ok", "store": "ok", "keys": "ok"},
        }

    def test_a_vanished_object_store_is_named(
        self, client: TestClient, vault: Vault, caplog: pytest.LogCaptureFixture
    ) -> None:
        root = vault.settings.store.filesystem.root
        assert root is not None
        shutil.rmtree(root)
        checks = _ready(client, 503)
        assert checks == {"catalog": "ok", "store": "unavailable", "keys": "ok"}
        assert "readiness: store unavailable: StorageUnavailable" in caplog.messages

    def test_a_missing_key_file_is_named(self, client: TestClient, vault: Vault) -> None:
        key_file = vault.settings.keys.local.path
        assert key_file is not None
        moved = key_file.with_suffix(".away")
        key_file.rename(moved)
        assert _ready(client, 503) == {"catalog": "ok", "store": "ok", "keys": "unavailable"}
        moved.rename(key_file)
        assert _ready(client, 200) == {"catalog": "ok", "store": "ok", "keys": "ok"}

    def test_a_catalog_that_does_not_answer_is_named(
        self, client: TestClient, vault: Vault, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse() -> None:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

        monkeypatch.setattr(vault.catalog.engine, "connect", refuse)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["catalog"] == "unavailable"
        assert "refused" not in response.text  # the cause stays in the log

    def test_a_dependency_that_hangs_is_unavailable_and_not_asked_again_meanwhile(
        self, vault: Vault, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        release = threading.Event()
        asked: list[int] = []

        def hang(_vault: Vault) -> None:
            asked.append(1)
            release.wait(30)

        monkeypatch.setitem(readiness.CHECKS, "keys", hang)
        # The deadline must outlast the real catalog and store checks on a
        # loaded machine (tens of ms), as the hung check is waited for each time.
        probe = readiness.ReadinessProbe(vault, timeout=1.0)
        try:
            first, second = probe.check(), probe.check()
        finally:
            release.set()
        assert first == second == {"catalog": "ok", "store": "ok", "keys": "unavailable"}
        assert asked == [1]  # the hung check was not started a second time
        # Once it returns, it is asked again. A probe made while the hung
        # check is returning may still take that check's own late answer,
        # so the probe is repeated until a second asking has answered.
        deadline = time.monotonic() + 10
        while not (probe.check()["keys"] == "ok" and len(asked) == 2):
            assert time.monotonic() < deadline
        assert asked == [1, 1]
