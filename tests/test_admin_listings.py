"""The operator's listings and explicit organisations, from the command line.

``admin list-organisations``, ``admin list-users``, ``admin list-tokens`` and
``case list`` show what an operator acts on and nothing secret; the listings
of personal data are recorded in the access log. ``case close`` closes a case
as the receiver understands it. An ``--organisation`` that names no
organisation is refused with its close matches unless ``--new-organisation``
is given. Each test runs the commands on its own SQLite vault.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom_ingest.synthetic import write_series
from tests.cli_support import Cli
from tests.cstore_support import associate, small_series, studies
from tests.services.dicom_peers import Receiver
from vault.catalog.accounts import ApiToken, User
from vault.catalog.models import Case, Organisation
from vault.command_support import cli_actor

PASSWORD = "a passphrase from a script"
ACTOR = cli_actor()  # the account running the tests: cli:<login>


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data")


def _user(
    cli: Cli, email: str, role: str, organisation: str, *extra: str, stdin: str | None = None
) -> str:
    args = ("admin", "create-user", email, "--role", role, "--organisation", organisation)
    return cli(*args, *extra, stdin=stdin)


# --- organisations ---------------------------------------------------------------------


class TestOrganisationsAreCreatedOnlyOnRequest:
    @pytest.mark.parametrize(
        "command",
        [
            ("case", "create", "CASE-2"),
            ("pacs", "add", "CTSCANNER"),
            ("admin", "create-user", "x@demo.example", "--role", "clinician"),
        ],
    )
    def test_a_misspelt_organisation_is_refused_with_its_close_matches(
        self, cli: Cli, command: tuple[str, ...]
    ) -> None:
        cli("case", "create", "CASE-1", "--organisation", "Demo Hospital", "--new-organisation")
        output = cli(*command, "--organisation", "Demo Hospitl", code=2)
        assert output.strip() == (
            "error: no organisation named 'Demo Hospitl' (close matches: Demo Hospital);"
            " --new-organisation creates it"
        )
        with cli.session() as session:
            assert list(session.scalars(select(Organisation.name))) == ["Demo Hospital"]

    def test_a_name_like_none_is_refused_without_matches(self, cli: Cli) -> None:
        output = cli("case", "create", "CASE-1", "--organisation", "Demo Hospital", code=2)
        assert output.strip() == (
            "error: no organisation named 'Demo Hospital'; --new-organisation creates it"
        )
        with cli.session() as session:
            assert session.scalar(select(Case)) is None

    def test_new_organisation_creates_it_once_and_records_its_creation(self, cli: Cli) -> None:
        _user(cli, "a@maker.example", "admin", "Maker", "--new-organisation")
        _user(cli, "b@maker.example", "admin", "Maker", "--new-organisation")  # found, not made
        _user(cli, "c@maker.example", "engineer", "Maker")
        with cli.session() as session:
            (org,) = session.scalars(select(Organisation))
        assert (org.name, org.kind) == ("Maker", "manufacturer")
        created = cli.audited("admin.org-create")
        assert [(e.actor, e.object_type, e.object_id) for e in created] == [
            (ACTOR, "organisation", org.id)
        ]

    def test_list_organisations_counts_users_cases_and_pacs_nodes(self, cli: Cli) -> None:
        cli("pacs", "add", "CTSCANNER", "--organisation", "Demo Hospital", "--new-organisation")
        cli("case", "create", "CASE-1", "--organisation", "Demo Hospital")
        cli("case", "create", "CASE-2", "--organisation", "Demo Hospital")
        _user(cli, "a@maker.example", "admin", "Maker", "--new-organisation")
        lines = cli("admin", "list-organisations").splitlines()
        assert [line.split("  ")[:5] for line in lines] == [
            ["Demo Hospital", "kind=hospital", "users=0", "cases=2", "pacs-nodes=1"],
            ["Maker", "kind=manufacturer", "users=1", "cases=0", "pacs-nodes=0"],
        ]


# --- users -----------------------------------------------------------------------------


class TestListUsers:
    def test_each_user_with_role_organisation_state_enrolment_and_last_login(
        self, cli: Cli
    ) -> None:
        _user(cli, "invited@maker.example", "admin", "Maker", "--new-organisation")
        _user(cli, "eng@maker.example", "engineer", "Maker", "--password-stdin", stdin=PASSWORD)
        _user(cli, "gone@maker.example", "engineer", "Maker", "--password-stdin", stdin=PASSWORD)
        last_login = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
        with cli.session() as session:
            user = session.scalar(select(User).where(User.email == "gone@maker.example"))
            user.totp_confirmed_at = user.last_login_at = last_login
            user.totp_sealed, user.disabled = b"sealed-secret", True
        lines = [line.split("  ")[:6] for line in cli("admin", "list-users").splitlines()]
        assert lines == [
            ["eng@maker.example", "role=engineer", "organisation=Maker", "enabled",
             "enrolment=password-set", "last-login=never"],
            ["gone@maker.example", "role=engineer", "organisation=Maker", "disabled",
             "enrolment=enrolled", "last-login=2026-03-04"],
            ["invited@maker.example", "role=admin", "organisation=Maker", "enabled",
             "enrolment=invited", "last-login=never"],
        ]  # fmt: skip

    def test_no_password_hash_or_second_factor_secret_is_shown(self, cli: Cli) -> None:
        _user(cli, "eng@maker.example", "engineer", "Maker", "--new-organisation",
              "--password-stdin", stdin=PASSWORD)  # fmt: skip
        with cli.session() as session:
            user = session.scalar(select(User))
            secrets = [user.password_hash, user.id]
        output = cli("admin", "list-users")
        assert secrets[0] and secrets[0] not in output
        assert "argon2" not in output and f"id={secrets[1]}" in output

    def test_the_listing_is_recorded_with_a_count_and_no_address(self, cli: Cli) -> None:
        _user(cli, "a@maker.example", "admin", "Maker", "--new-organisation")
        _user(cli, "b@site.example", "clinician", "Site", "--new-organisation")
        cli("admin", "list-users")
        cli("admin", "list-users", "--organisation", "Site")
        with cli.session() as session:
            site = session.scalar(select(Organisation.id).where(Organisation.name == "Site"))
        listed = cli.audited("admin.user-list")
        assert [(e.actor, e.object_type, e.object_id, json.loads(e.detail)) for e in listed] == [
            (ACTOR, "query", None, {"rows": 2}),
            (ACTOR, "query", site, {"rows": 1}),
        ]

    def test_an_unknown_organisation_filter_is_refused_and_not_recorded(self, cli: Cli) -> None:
        _user(cli, "a@maker.example", "admin", "Maker", "--new-organisation")
        output = cli("admin", "list-users", "--organisation", "Makr", code=2)
        assert "close matches: Maker" in output
        assert cli.audited("admin.user-list") == []


# --- tokens ----------------------------------------------------------------------------


def _days_since(before: datetime) -> set[str]:
    """The UTC dates from ``before`` to now: a command run across midnight
    dates what it did either day."""
    return {f"{day:%Y-%m-%d}" for day in (before, datetime.now(UTC))}


def _token(cli: Cli, *args: str) -> tuple[str, str]:
    """Issue a token: (its id, its secret)."""
    output = cli("admin", *args)
    match = re.search(r"^token ([0-9a-f]{32}) ", output, re.MULTILINE)
    assert match, output
    return match.group(1), output.strip().splitlines()[-1]


class TestListTokens:
    @pytest.fixture
    def people(self, cli: Cli) -> Cli:
        cli("case", "create", "CASE-1", "--organisation", "Demo Hospital", "--new-organisation")
        _user(cli, "ops@maker.example", "admin", "Maker", "--new-organisation")
        _user(cli, "eng@maker.example", "engineer", "Maker")
        cli("admin", "assign", "CASE-1", "eng@maker.example")
        return cli

    def test_each_token_with_owner_scope_case_dates_and_state_never_its_secret(
        self, people: Cli
    ) -> None:
        before = datetime.now(UTC)
        metrics, metrics_secret = _token(people, "metrics-token", "ops@maker.example")
        bound, bound_secret = _token(
            people, "create-token", "eng@maker.example", "--case", "CASE-1", "--name", "my tool"
        )
        output = people("admin", "list-tokens")
        assert metrics_secret not in output and bound_secret not in output
        first, second = (line.split("  ") for line in output.splitlines())
        assert first[:5] == [
            metrics, "owner=ops@maker.example", "scope=metrics", 'name="prometheus"', "case=-"
        ]  # fmt: skip
        assert second[:5] == [
            bound, "owner=eng@maker.example", "scope=read:pseudonymised", 'name="my tool"',
            "case=CASE-1",
        ]  # fmt: skip
        assert any(f"created={day}" in second for day in _days_since(before))
        assert "revoked=-" in second and "state=active" in second

    def test_the_listed_id_is_what_revoke_token_takes(self, people: Cli) -> None:
        _token(people, "create-token", "eng@maker.example")
        token_id = people("admin", "list-tokens").split()[0]
        before = datetime.now(UTC)
        people("admin", "revoke-token", token_id)
        listed = people("admin", "list-tokens")
        assert any(f"revoked={day}" in listed for day in _days_since(before))
        assert "state=revoked" in listed

    def test_an_expired_token_says_so(self, people: Cli) -> None:
        token_id, _ = _token(people, "create-token", "eng@maker.example")
        with people.session() as session:
            token = session.get(ApiToken, token_id)
            token.expires_at = datetime.now(UTC) - timedelta(days=1)
        assert "state=expired" in people("admin", "list-tokens")

    def test_one_owners_tokens_and_the_listing_recorded_against_them(self, people: Cli) -> None:
        _token(people, "metrics-token", "ops@maker.example")
        eng_token, _ = _token(people, "create-token", "eng@maker.example")
        output = people("admin", "list-tokens", "ENG@maker.example")
        assert [line.split()[0] for line in output.splitlines()] == [eng_token]
        people("admin", "list-tokens")
        with people.session() as session:
            eng = session.scalar(select(User.id).where(User.email == "eng@maker.example"))
        listed = people.audited("token.list")
        assert [(e.actor, e.object_type, e.object_id, json.loads(e.detail)) for e in listed] == [
            (ACTOR, "user", eng, {"rows": 1}),
            (ACTOR, "query", None, {"rows": 2}),
        ]

    def test_an_unknown_owner_is_refused(self, people: Cli) -> None:
        assert "no such user" in people("admin", "list-tokens", "who@else.example", code=2)
        assert people.audited("token.list") == []


# --- cases -----------------------------------------------------------------------------


def _case_cli(receiver: Receiver) -> Cli:
    return Cli(receiver.vault.settings.data_dir)


def _push(receiver: Receiver, accession: str, *, seed: int) -> None:
    datasets = small_series(2, seed=seed)
    for ds in datasets:
        ds.AccessionNumber = accession
    assoc = associate(receiver)
    assert [assoc.send_c_store(ds).Status for ds in datasets] == [0, 0]
    assoc.release()


class TestCases:
    def test_case_list_shows_organisation_state_and_number_of_studies(
        self, receiver: Receiver
    ) -> None:
        cli = _case_cli(receiver)
        cli("case", "create", "ACC-1", "--organisation", "Test Hospital")
        cli("case", "create", "ACC-2", "--organisation", "Other Hospital", "--new-organisation")
        _push(receiver, "ACC-1", seed=1)
        _push(receiver, "ACC-1", seed=2)
        lines = [line.split("  ")[:4] for line in cli("case", "list").splitlines()]
        assert lines == [
            ["ACC-1", "organisation=Test Hospital", "state=open", "studies=2"],
            ["ACC-2", "organisation=Other Hospital", "state=open", "studies=0"],
        ]
        only = cli("case", "list", "--organisation", "Other Hospital").splitlines()
        assert [line.split()[0] for line in only] == ["ACC-2"]
        assert [json.loads(e.detail) for e in cli.audited("case.list")] == [
            {"cases": 2},
            {"cases": 1},
        ]

    def test_a_closed_case_takes_no_new_push_and_no_inbox_study(self, receiver: Receiver) -> None:
        cli = _case_cli(receiver)
        cli("case", "create", "ACC-7", "--organisation", "Test Hospital")
        _push(receiver, "ACC-7", seed=1)
        assert cli("case", "close", "ACC-7") == "case ACC-7 closed\n"
        _push(receiver, "ACC-7", seed=2)  # a new association: the case is looked up again
        filed, inbox = sorted(studies(receiver.vault), key=lambda s: s.case_id is None)
        assert filed.case_id is not None and inbox.case_id is None
        refused = cli("case", "file", inbox.id, "--case", "ACC-7", code=2)
        assert "this case is not open" in refused
        assert "state=closed  studies=1" in cli("case", "list")
        (closed,) = cli.audited("case.close")
        assert (closed.actor, closed.object_type, closed.object_id) == (
            ACTOR,
            "case",
            filed.case_id,
        )

    def test_a_closed_case_takes_no_files_from_ingest(self, cli: Cli, tmp_path: Path) -> None:
        write_series(tmp_path / "cd", small_series(2))
        cli("case", "create", "CASE-1", "--organisation", "Demo Hospital", "--new-organisation")
        cli("case", "close", "CASE-1")
        refused = cli("ingest", str(tmp_path / "cd"), "--case", "CASE-1", code=2)
        assert refused.strip() == "error: this case is not open"
        assert "studies=0" in cli("case", "list")

    def test_closing_a_closed_or_unknown_case_is_refused(self, cli: Cli) -> None:
        cli("case", "create", "CASE-1", "--organisation", "Demo Hospital", "--new-organisation")
        cli("case", "close", "CASE-1")
        assert "already closed" in cli("case", "close", "CASE-1", code=2)
        assert "no such case" in cli("case", "close", "CASE-404", code=2)
        assert len(cli.audited("case.close")) == 1
