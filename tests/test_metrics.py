"""GET /metrics: the operators' figures in the Prometheus text format 0.0.4.

Every scrape is parsed strictly (:func:`parse`: each family's HELP then TYPE
before its samples, one ``name{labels} value`` per line, names
``dicom_vault_...``, label values escaped as the format says). The figures
follow real changes, on SQLite and PostgreSQL: a synthetic series ingested,
settled and pseudonymised, a legal hold, an erasure, an upload with bytes
held, PACS nodes, users and tokens, a data-subject request and breaches
taken past their deadlines on the vault's clock, access-log records and a
checkpoint. Access: nobody gets 401, a clinician, a DPO or an engineer's
token 403, an administrator's session and a ``metrics`` token 200, and a
``metrics`` token reads nothing else. No planted PHI marker, UID, case
reference or account name ever appears in the exposition.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from dicom_ingest.synthetic import SyntheticPatient, encode, make_ct_series
from tests.engineer_support import ingest, pseudonymise
from tests.services.auth_env import BASE_URL, START, Account, AuthWorld
from tests.services.vault_env import CaseContext, make_case
from tests.upload_support import BLOCK, Uploader, slice_bytes, upload_settings
from vault import breaches, dsr, metrics
from vault.admin import (
    create_case,
    get_or_create_organisation,
    register_pacs_node,
    set_pacs_node_enabled,
)
from vault.api.app import create_app
from vault.audit import AuditRecord
from vault.audit_retention import write_checkpoint
from vault.auth.sessions import csrf_token
from vault.catalog.models import AuditEvent
from vault.cli import app as cli
from vault.clock import FrozenClock
from vault.command_support import cli_actor
from vault.core import Vault
from vault.errors import InvalidInput
from vault.holds import place_hold
from vault.metrics import Family, Sample, exposition
from vault.retention import erase_study

PREFIX = "dicom_vault_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

COUNTERS = ("studies_shredded_total", "audit_records_total")
FAMILIES = {
    name: "counter" if name in COUNTERS else "gauge"
    for name in (
        *("up", "build_info", "studies", "series", "instances", "stored_plaintext_bytes"),
        *("legal_holds", "studies_under_legal_hold", "stored_plaintext_bytes_under_legal_hold"),
        *("studies_shredded_total", "pending_object_deletions"),
        *("pseudonymised_studies", "pseudonymised_instances"),
        *("uploads", "open_upload_files", "upload_spooled_bytes"),
        *("pacs_nodes", "commitment_reports", "users", "api_tokens_live"),
        *("data_subject_requests_open", "data_subject_requests_overdue"),
        *("breaches_open", "breaches_awaiting_notification"),
        *("audit_records_total", "audit_records_after_checkpoint", "audit_checkpoint_age_seconds"),
    )
}

# --- a strict parser of the text exposition format 0.0.4 ------------------------------

_FAMILY = re.compile(r"dicom_vault_[a-z0-9_]+")
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_VALUE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]Inf|NaN")
_UNESCAPE = {"n": "\n", "\\": "\\", '"': '"'}

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class Exposition:
    helps: dict[str, str] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    samples: dict[Key, float] = field(default_factory=dict)

    def __call__(self, name: str, **labels: str) -> float:
        """The value of sample ``dicom_vault_<name>{labels}`` (KeyError if absent)."""
        return self.samples[(PREFIX + name, tuple(sorted(labels.items())))]

    def label_values(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}


def _labels(text: str) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _LABEL.match(text, position)
        assert match, f"malformed label at {text[position:]!r}"
        assert match[1] not in found, f"label {match[1]} twice"
        found[match[1]] = re.sub(r"\\(.)", lambda m: _UNESCAPE[m[1]], match[2])
        position = match.end()
        if position < len(text):
            assert text[position] == "," and position + 1 < len(text), text
            position += 1
    return tuple(sorted(found.items()))


def _comment(parsed: Exposition, line: str) -> str | None:
    """A HELP or TYPE line; the family whose samples may follow (after its TYPE)."""
    assert line.startswith("# "), line
    keyword, name, text = [*line[2:].split(" ", 2), "", ""][:3]
    assert _FAMILY.fullmatch(name), f"bad family name in {line!r}"
    if keyword == "HELP":
        assert name not in parsed.helps and text, f"HELP again or empty: {line!r}"
        parsed.helps[name] = text
        return None
    assert keyword == "TYPE", f"a comment that is neither HELP nor TYPE: {line!r}"
    assert name in parsed.helps and name not in parsed.types, f"TYPE before HELP: {line!r}"
    assert text in {"counter", "gauge"}, line
    assert text != "counter" or name.endswith("_total"), f"counter without _total: {line!r}"
    parsed.types[name] = text
    return name


def _sample(parsed: Exposition, line: str, family: str | None) -> None:
    match = _SAMPLE.fullmatch(line)
    assert match, f"not a sample line: {line!r}"
    assert family is not None and match[1] == family, f"sample outside its family: {line!r}"
    assert _VALUE.fullmatch(match[3]), f"bad value: {line!r}"
    key = (family, _labels(match[2] or ""))
    assert key not in parsed.samples, f"duplicate sample: {line!r}"
    parsed.samples[key] = float(match[3])


def parse(text: str) -> Exposition:
    """Parse ``text`` strictly (see module docstring); fail on any deviation."""
    assert text.endswith("\n") and "\r" not in text
    parsed, family = Exposition(), None
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            family = _comment(parsed, line)
        else:
            _sample(parsed, line, family)
    assert parsed.helps.keys() == parsed.types.keys(), "a family without its TYPE"
    sampled = {name for name, _ in parsed.samples}
    assert sampled == set(parsed.types), f"families without samples: {set(parsed.types) - sampled}"
    return parsed


# --- the world ------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Site:
    """The app on one catalog backend, an administrator and their scraper's token."""

    world: AuthWorld
    admin: Account
    token: str

    @property
    def vault(self) -> Vault:
        return self.world.vault

    def scrape(self) -> Exposition:
        response = self.world.new_client().get("/metrics", headers=bearer(self.token))
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == CONTENT_TYPE
        return parse(response.text)

    def case(self, reference: str) -> CaseContext:
        return make_case(self.vault, reference)

    def advance(self, delta: timedelta) -> None:
        self.world.clock.advance(delta)


def _site(settings_dir: Path, catalog_url: str | None) -> Iterator[Site]:
    settings = upload_settings(settings_dir)  # cheap argon2, 64 KiB held blocks
    if catalog_url:
        settings.catalog.url = catalog_url
    clock = FrozenClock(START)
    with TestClient(create_app(settings, clock=clock), base_url=BASE_URL) as client:
        world = AuthWorld(client, clock)
        admin = world.add_user("ops@maker.example", "admin", "Maker")
        yield Site(world, admin, world.token(admin, scope="metrics", days=365))


@pytest.fixture(params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A site on SQLite, then on PostgreSQL."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    yield from _site(tmp_path / "data", url)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Site]:
    """A site on SQLite only: for what does not depend on the catalog backend."""
    yield from _site(tmp_path / "data", None)


def ct_series(count: int, seed: int, patient: SyntheticPatient | None = None) -> list[Dataset]:
    made = make_ct_series(
        count, rows=16, columns=16, seed=seed, patient=patient or SyntheticPatient(), plant_phi=True
    )
    return list(made)


def plaintext_bytes(datasets: list[Dataset]) -> int:
    return sum(len(encode(ds)) for ds in datasets)


# --- the format ---------------------------------------------------------------------------


class TestExposition:
    def test_a_scrape_parses_and_every_family_is_named_and_typed(self, embedded: Site) -> None:
        figures = embedded.scrape()
        assert figures("up") == 1
        assert figures("build_info", version=metrics.build_version()) == 1
        assert metrics.build_version() == importlib.metadata.version("dicom-vault")
        # Dashboards and alert rules name these: a rename must be deliberate.
        assert figures.types == {PREFIX + name: kind for name, kind in FAMILIES.items()}

    def test_label_values_and_help_are_escaped(self) -> None:
        odd = 'a"b\\c\nd'
        family = Family("odd_total", "counter", "help \\ with\na line", (Sample((("x", odd),), 2),))
        text = exposition([family])
        assert "# HELP dicom_vault_odd_total help \\\\ with\\na line\n" in text
        assert 'dicom_vault_odd_total{x="a\\"b\\\\c\\nd"} 2\n' in text
        assert parse(text)("odd_total", x=odd) == 2

    def test_values_are_written_as_the_format_says(self) -> None:
        written = [metrics.format_value(v) for v in (0, 7, 3600.0, 0.25, float("inf"))]
        assert written == ["0", "7", "3600", "0.25", "+Inf"]
        assert metrics.format_value(float("nan")) == "NaN"

    def test_the_parser_refuses_what_the_format_does_not_allow(self) -> None:
        good = "# HELP dicom_vault_a A.\n# TYPE dicom_vault_a gauge\ndicom_vault_a 1\n"
        bad = [
            "dicom_vault_a 1\n",  # no HELP and TYPE
            good.replace("# TYPE dicom_vault_a gauge\n", ""),  # no TYPE
            good.replace("dicom_vault_a 1", "dicom_vault_b 1"),  # outside its family
            good.replace("dicom_vault_a 1", 'dicom_vault_a{s="x",} 1'),  # trailing comma
            good.replace("dicom_vault_a 1", "dicom_vault_a one"),  # not a number
            good.replace("dicom_vault_a", "vault_a"),  # not prefixed
            good + "\n",  # blank line
        ]
        assert parse(good)("a") == 1
        for text in bad:
            with pytest.raises(AssertionError):
                parse(text)


# --- the figures follow the catalog -----------------------------------------------------


class TestFiguresFollowTheCatalog:
    def test_studies_are_counted_by_state_held_and_shredded(self, site: Site) -> None:
        empty = site.scrape()
        assert empty("studies", state="receiving") == empty("studies", state="settled") == 0
        series = ct_series(3, seed=5)
        case = site.case("MET-1")
        study_id = ingest(case, series)
        figures = site.scrape()
        assert figures("studies", state="receiving") == 1
        assert figures("series") == 1
        assert figures("instances", state="receiving") == 3
        assert figures("stored_plaintext_bytes", state="receiving") == plaintext_bytes(series)
        assert figures("pseudonymised_studies", state="done") == 0

        pseudonymise(site.vault, study_id)  # settles it, then de-identifies it
        figures = site.scrape()
        assert (figures("studies", state="receiving"), figures("studies", state="settled")) == (
            0,
            1,
        )
        assert figures("instances", state="settled") == 3
        assert figures("stored_plaintext_bytes", state="settled") == plaintext_bytes(series)
        assert figures("pseudonymised_studies", state="done") == 1
        assert figures("pseudonymised_instances", state="done") == 3
        assert figures("pseudonymised_instances", state="quarantined") == 0

        place_hold(site.vault, reason_code="DISPUTE-1", placed_by="cli", case_id=case.case_id)
        other = ct_series(1, seed=9, patient=SyntheticPatient.generate(9))
        erased = ingest(site.case("MET-2"), other)
        assert site.scrape()("studies", state="receiving") == 1
        erase_study(site.vault, erased, actor="cli")
        figures = site.scrape()
        assert figures("legal_holds", target="case") == 1
        assert figures("studies_under_legal_hold") == 1
        assert figures("stored_plaintext_bytes_under_legal_hold") == plaintext_bytes(series)
        assert figures("studies", state="receiving") == 0
        assert figures("series") == 1
        assert figures("studies_shredded_total", reason="erased") == 1
        assert figures("studies_shredded_total", reason="expired") == 0
        assert figures("pending_object_deletions", kind="data") == 0

    def test_uploads_senders_users_and_tokens_are_counted(self, site: Site) -> None:
        clinician = site.world.add_user("clin@a.example", "clinician", "Hospital A")
        uploader = Uploader(
            site.world.new_client(), site.world.cookie_name, site.world.session_cookie(clinician)
        )
        with site.vault.catalog.session() as session:
            hospital = get_or_create_organisation(session, "Hospital A")
            case_id = create_case(session, "MET-UP", hospital).id
        upload = uploader.new_upload(case_id)
        data = slice_bytes(size=256)
        url = uploader.create(upload, len(data)).headers["location"]
        figures = site.scrape()
        assert figures("uploads", state="open") == 1
        assert figures("open_upload_files", state="receiving") == 1
        assert figures("upload_spooled_bytes") == 0
        held = 2 * BLOCK + 1000
        assert uploader.patch(url, 0, data[:held]).status_code == 204
        assert site.scrape()("upload_spooled_bytes") == held
        assert uploader.patch(url, held, data[held:]).status_code == 204
        figures = site.scrape()
        assert figures("open_upload_files", state="stored") == 1
        assert figures("upload_spooled_bytes") == 0
        assert uploader.complete(upload).status_code < 300
        figures = site.scrape()
        assert (figures("uploads", state="open"), figures("uploads", state="complete")) == (0, 1)
        assert figures("open_upload_files", state="stored") == 0  # its upload is not open

        with site.vault.catalog.session() as session:
            organisation = get_or_create_organisation(session, "Hospital A")
            register_pacs_node(session, "METPACS1", organisation)
            register_pacs_node(session, "METPACS2", organisation)
            set_pacs_node_enabled(session, "METPACS2", False)
        figures = site.scrape()
        assert (
            figures("pacs_nodes", state="enabled") == figures("pacs_nodes", state="disabled") == 1
        )

        engineer = site.world.add_user("eng@maker.example", "engineer", "Maker")
        site.world.token(engineer)
        short = site.world.token(site.admin, scope="metrics", days=1)
        figures = site.scrape()
        assert figures("users", role="admin", state="enabled") == 1
        assert figures("users", role="clinician", state="enabled") == 1
        assert figures("users", role="engineer", state="enabled") == 1
        assert figures("api_tokens_live", scope="read:pseudonymised") == 1
        assert figures("api_tokens_live", scope="metrics") == 2

        disable_user(site, engineer)  # through the admin page: its tokens are revoked
        site.advance(timedelta(days=1))  # the short metrics token expires
        assert site.world.new_client().get("/metrics", headers=bearer(short)).status_code == 401
        figures = site.scrape()
        assert figures("users", role="engineer", state="enabled") == 0
        assert figures("users", role="engineer", state="disabled") == 1
        assert figures("api_tokens_live", scope="read:pseudonymised") == 0
        assert figures("api_tokens_live", scope="metrics") == 1

    def test_deadlines_follow_the_vaults_clock(self, site: Site) -> None:
        vault = site.vault
        request = dsr.open_request(vault, kind="access", received_at=vault.clock.now(), actor="cli")
        breaches.record_breach(
            vault,
            detected_at=vault.clock.now(),
            nature=("confidentiality",),
            description="metrics test",
            actor="cli",
        )
        decided = breaches.record_breach(
            vault,
            detected_at=vault.clock.now(),
            nature=("availability",),
            description="x",
            actor="cli",
        )
        breaches.record_notification(
            vault,
            decided.id,
            actor="cli",
            party="authority",
            exemption="unlikely-risk",
            reason="backup tape encrypted; key not lost",
        )
        figures = site.scrape()
        assert figures("data_subject_requests_open") == 1
        assert figures("data_subject_requests_overdue") == 0
        assert figures("breaches_open") == 2
        assert figures("breaches_awaiting_notification", deadline="open") == 1
        assert figures("breaches_awaiting_notification", deadline="passed") == 0

        site.advance(breaches.NOTIFY_AUTHORITY_WITHIN + timedelta(seconds=1))
        figures = site.scrape()
        assert figures("breaches_awaiting_notification", deadline="open") == 0
        assert figures("breaches_awaiting_notification", deadline="passed") == 1
        assert figures("data_subject_requests_overdue") == 0

        site.advance(request.due_at - vault.clock.now() + timedelta(seconds=1))
        figures = site.scrape()
        assert figures("data_subject_requests_overdue") == 1
        assert figures("breaches_open") == 2

        dsr.close_request(vault, request.id, actor="cli", outcome="completed", note="answered")
        figures = site.scrape()
        assert (
            figures("data_subject_requests_open") == figures("data_subject_requests_overdue") == 0
        )

    def test_the_access_log_head_and_its_newest_checkpoint(self, site: Site) -> None:
        for _ in range(2):
            site.vault.audit.record(AuditRecord("cli", "metrics.test"))
        head = chain_head(site.vault)
        assert head >= 2
        figures = site.scrape()
        assert figures("audit_records_total") == head
        assert figures("audit_records_after_checkpoint") == head
        assert figures("audit_checkpoint_age_seconds") == float("inf")
        assert site.scrape()("audit_records_total") == head  # a scrape is not recorded

        write_checkpoint(site.vault)
        site.advance(timedelta(hours=1))
        figures = site.scrape()
        assert figures("audit_records_total") == head + 1  # audit.checkpoint
        assert figures("audit_records_after_checkpoint") == 0
        assert figures("audit_checkpoint_age_seconds") == 3600

        site.vault.audit.record(AuditRecord("cli", "metrics.test"))
        figures = site.scrape()
        assert figures("audit_records_total") == head + 2
        assert figures("audit_records_after_checkpoint") == 1


def chain_head(vault: Vault) -> int:
    with vault.catalog.read_session() as session:
        return session.scalar(select(func.max(AuditEvent.seq))) or 0


def disable_user(site: Site, account: Account) -> None:
    client = site.world.new_client()
    cookie = site.world.session_cookie(site.admin)
    client.cookies.set(site.world.cookie_name, cookie)
    path = f"/admin/users/{account.user_id}/disable"
    response = client.post(path, data={"csrf_token": csrf_token(cookie)}, follow_redirects=False)
    assert response.status_code == 303, response.text


# --- who may scrape -------------------------------------------------------------------------


class TestAccess:
    def test_nobody_gets_401(self, embedded: Site) -> None:
        response = embedded.world.new_client().get("/metrics")
        assert response.status_code == 401
        assert response.json()["error"] == "not-authenticated"

    def test_a_clinician_a_dpo_and_an_engineer_token_get_403(self, embedded: Site) -> None:
        world = embedded.world
        for role in ("clinician", "dpo", "engineer"):
            account = world.add_user(f"{role}@maker.example", role, "Maker")
            client = world.new_client()
            client.cookies.set(world.cookie_name, world.session_cookie(account))
            assert client.get("/metrics").status_code == 403, role
        engineer = world.add_user("tools@maker.example", "engineer", "Maker")
        token = world.token(engineer)
        assert world.new_client().get("/metrics", headers=bearer(token)).status_code == 403

    def test_an_administrator_session_and_a_metrics_token_get_the_figures(
        self, embedded: Site
    ) -> None:
        world = embedded.world
        client = world.new_client()
        client.cookies.set(world.cookie_name, world.session_cookie(embedded.admin))
        by_session = client.get("/metrics")
        assert by_session.status_code == 200
        assert by_session.headers["content-type"] == CONTENT_TYPE
        assert by_session.headers["cache-control"] == "no-store"
        assert parse(by_session.text)("up") == 1
        assert embedded.scrape()("up") == 1

    def test_a_metrics_token_reads_nothing_else(self, embedded: Site) -> None:
        client = embedded.world.new_client()
        paths = ("/api/me", "/api/cases", "/api/engineer/studies", "/dicomweb/studies", "/admin")
        for path in paths:
            response = client.get(path, headers=bearer(embedded.token), follow_redirects=False)
            assert response.status_code == 403, path

    def test_a_revoked_metrics_token_gets_401(self, embedded: Site) -> None:
        from vault.auth.digests import digest
        from vault.catalog.accounts import ApiToken

        with embedded.vault.catalog.session() as session:
            token = session.scalars(
                select(ApiToken).where(ApiToken.token_hash == digest(embedded.token))
            ).one()
            embedded.world.auth.tokens.revoke(session, token.id)
        response = embedded.world.new_client().get("/metrics", headers=bearer(embedded.token))
        assert response.status_code == 401

    def test_only_an_active_administrator_holds_a_metrics_token(self, embedded: Site) -> None:
        world = embedded.world
        others = [world.add_user(f"{r}2@maker.example", r, "Maker") for r in ("engineer", "dpo")]
        for account in others:
            with pytest.raises(InvalidInput):
                world.token(account, scope="metrics")
        with pytest.raises(InvalidInput):  # nor does an administrator read pseudonymised data
            world.token(embedded.admin)
        case_id = make_case(embedded.vault, "MET-TOK").case_id
        with pytest.raises(InvalidInput):  # a metrics token reads no case
            world.token(embedded.admin, scope="metrics", case_id=case_id)

    def test_a_catalog_that_cannot_be_read_answers_503(
        self, embedded: Site, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def broken(*_: object) -> list[Family]:
            raise OperationalError("SELECT 1", {}, ConnectionError("catalog down"))

        monkeypatch.setattr(metrics, "COLLECTORS", (broken,))
        response = embedded.world.new_client().get("/metrics", headers=bearer(embedded.token))
        assert response.status_code == 503
        assert response.json()["error"] == "storage-unavailable"


NEW_ORG_IT = ("--organisation", "IT", "--new-organisation")


class TestMetricsTokenFromTheCli:
    def test_an_administrator_gets_a_token_once_and_its_creation_is_recorded(
        self, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        env = {"DICOM_VAULT_DATA_DIR": str(data_dir)}
        runner = CliRunner()
        made = runner.invoke(
            cli,
            ["admin", "create-user", "ops@site.example", "--role", "admin", *NEW_ORG_IT],
            env=env,
        )
        assert made.exit_code == 0, made.output
        issued = runner.invoke(cli, ["admin", "metrics-token", "ops@site.example"], env=env)
        assert issued.exit_code == 0, issued.output
        secret = issued.output.strip().splitlines()[-1]
        token_id = re.search(r"^token ([0-9a-f]{32}) \(metrics\) expires", issued.output, re.M)
        assert token_id and secret.startswith("dvt_")
        settings = upload_settings(data_dir)
        with TestClient(create_app(settings), base_url=BASE_URL) as client:  # the real clock
            assert client.get("/metrics", headers=bearer(secret)).status_code == 200
            assert client.get("/api/me", headers=bearer(secret)).status_code == 403
            events = list(client.app.state.vault.audit.events())  # type: ignore[attr-defined]
        created = [e for e in events if e.action == "token.create"]
        assert [(e.actor, e.object_id, e.detail) for e in created] == [
            (cli_actor(), token_id[1], '{"scope":"metrics"}')
        ]
        assert secret not in "".join(e.detail + (e.object_id or "") for e in events)

    def test_an_engineer_is_refused_a_metrics_token(self, tmp_path: Path) -> None:
        env = {"DICOM_VAULT_DATA_DIR": str(tmp_path / "data")}
        runner = CliRunner()
        args = ["admin", "create-user", "e@site.example", "--role", "engineer"]
        args += ["--organisation", "Maker", "--new-organisation"]
        assert runner.invoke(cli, args, env=env).exit_code == 0
        refused = runner.invoke(cli, ["admin", "metrics-token", "e@site.example"], env=env)
        assert refused.exit_code == 2
        assert "only an active admin holds metrics tokens" in refused.output


# --- no PHI ------------------------------------------------------------------------------------


class TestNoPhi:
    def test_no_marker_uid_reference_or_name_reaches_the_exposition(self, embedded: Site) -> None:
        patient = SyntheticPatient()
        series = ct_series(3, seed=21, patient=patient)
        case = embedded.case("REF-QX-7731")
        study_id = ingest(case, series)
        pseudonymise(embedded.vault, study_id)
        place_hold(embedded.vault, reason_code="HOLD-QX-5521", placed_by="cli", study_id=study_id)
        other = make_case(embedded.vault, "REF-QX-8842")
        erased = ingest(other, ct_series(1, seed=22, patient=SyntheticPatient.generate(22)))
        # An erasure reason is a free code: it is counted as "other", never shown.
        erase_study(embedded.vault, erased, actor="cli", reason="ERASE-QX-9930")
        figures = embedded.scrape()
        text = embedded.world.new_client().get("/metrics", headers=bearer(embedded.token)).text
        assert figures("studies_shredded_total", reason="other") == 1
        assert figures("studies_under_legal_hold") == 1
        uids = {str(ds[tag].value) for ds in series for tag in _UID_TAGS}
        forbidden = [
            *patient.markers(),
            *sorted(uids),
            "REF-QX-7731",
            "REF-QX-8842",
            "HOLD-QX-5521",
            "ERASE-QX-9930",
            case.case_id,
            study_id,
            erased,
            embedded.admin.email,
            embedded.admin.user_id,
            "Test Hospital",
            "Maker",
        ]
        leaked = [value for value in forbidden if value.lower() in text.lower()]
        assert leaked == []
        assert figures.label_values() <= _FIXED_WORDS | {metrics.build_version()}


_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_FIXED_WORDS = {
    *("receiving", "settled", "case", "study", "expired", "erased", "data", "envelope"),
    *("queued", "running", "done", "quarantined", "failed", "other"),
    *("open", "complete", "abandoned", "stored", "duplicate", "refused", "partial", "skipped"),
    *("enabled", "disabled", "clinician", "engineer", "dpo", "admin"),
    *("read:pseudonymised", "metrics", "passed"),
    *("pending", "reported", "given-up"),
}
