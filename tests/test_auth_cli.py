"""The newcomer's first login: ``dicom-vault admin`` commands, as a separate process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.services.auth_env import BASE_URL, START, form_nonce, post_login
from vault.api.app import create_app
from vault.auth.links import link_url
from vault.clock import FrozenClock
from vault.settings import ApiSettings, AuthSettings, Settings

CLI = Path(sys.executable).with_name("dicom-vault")
PASSWORD = "a passphrase from a script"


def run(data_dir: Path, *args: str, stdin: str = "", check: bool = True) -> str:
    env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [str(CLI), "admin", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )
    return done.stdout if check else f"{done.returncode}\n{done.stderr}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def web(data_dir: Path) -> Iterator[TestClient]:
    """The web app on the same data directory the CLI wrote to."""
    settings = Settings(data_dir=data_dir, auth=AuthSettings(password_time_cost=1))
    with TestClient(create_app(settings, clock=FrozenClock(START)), base_url=BASE_URL) as client:
        yield client


def _link_token(output: str) -> str:
    match = re.search(r"^https?://\S+/set-password#(\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def _set_password(web: TestClient, token: str) -> int:
    data = {
        "token": token,
        "password": PASSWORD,
        "password_confirm": PASSWORD,
        "form_nonce": form_nonce(web, "/set-password"),
    }
    return web.post("/set-password", data=data).status_code


class TestCreateUser:
    def test_printed_link_sets_the_password_and_leads_to_enrolment(
        self, data_dir: Path, web: TestClient
    ) -> None:
        output = run(
            data_dir,
            "create-user",
            "new@maker.example",
            "--role",
            "admin",
            "--organisation",
            "Maker",
            "--new-organisation",
        )
        assert _set_password(web, _link_token(output)) == 200
        response = post_login(web, "new@maker.example", PASSWORD)
        assert (response.status_code, response.headers["location"]) == (303, "/enrol")

    def test_password_from_stdin_for_scripts(self, data_dir: Path, web: TestClient) -> None:
        output = run(
            data_dir,
            "create-user",
            "bot@maker.example",
            "--role",
            "engineer",
            "--organisation",
            "Maker",
            "--new-organisation",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        assert "set-password#" not in output
        assert post_login(web, "bot@maker.example", PASSWORD).headers["location"] == "/enrol"

    def test_unknown_role_is_refused(self, data_dir: Path) -> None:
        result = run(
            data_dir,
            "create-user",
            "x@maker.example",
            "--role",
            "wizard",
            "--organisation",
            "Maker",
            "--new-organisation",
            check=False,
        )
        assert result.startswith("2\n")
        assert "role" in result


class TestTokensFromTheCli:
    def test_token_for_an_assigned_case_reads_it(self, data_dir: Path, web: TestClient) -> None:
        env = {**os.environ, "DICOM_VAULT_DATA_DIR": str(data_dir)}
        subprocess.run(
            [str(CLI), "case", "create", "CLI-1", "--organisation", "Hosp", "--new-organisation"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        run(
            data_dir,
            "create-user",
            "eng@maker.example",
            "--role",
            "engineer",
            "--organisation",
            "Maker",
            "--new-organisation",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )
        run(data_dir, "assign", "CLI-1", "eng@maker.example")
        output = run(data_dir, "create-token", "eng@maker.example", "--case", "CLI-1")
        token = output.strip().splitlines()[-1]
        response = web.get("/api/cases", headers={"Authorization": f"Bearer {token}"})
        assert [case["reference"] for case in response.json()] == ["CLI-1"]
        token_id = re.search(r"token ([0-9a-f]{32})", output)
        assert token_id
        run(data_dir, "revoke-token", token_id.group(1))
        response = web.get("/api/cases", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401


class TestLinkAddress:
    def test_links_start_with_the_public_url(self, data_dir: Path) -> None:
        api = ApiSettings(public_url="https://vault.example.org/")
        settings = Settings(data_dir=data_dir, api=api)
        assert link_url(settings, "T0KEN") == "https://vault.example.org/set-password#T0KEN"

    def test_without_one_links_name_the_api_address(self, data_dir: Path) -> None:
        settings = Settings(data_dir=data_dir, api=ApiSettings(host="10.0.0.5", port=8443))
        assert link_url(settings, "T0KEN") == "http://10.0.0.5:8443/set-password#T0KEN"
