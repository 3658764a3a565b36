"""Login attempts made at the same moment, on SQLite and on PostgreSQL.

An attacker sends guesses in parallel: every one must count towards the
lock-out, and a TOTP code must open one session only, however the requests
interleave. The password check uses a realistic argon2 cost (tens of
milliseconds), so that parallel attempts really overlap.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest

from tests.services.auth_env import PASSWORD, START, auth_test_settings
from vault.admin import create_user, get_or_create_organisation
from vault.auth import totp
from vault.auth.login import Authenticator, Outcome
from vault.auth.throttle import address_key
from vault.clock import FrozenClock
from vault.core import Vault, open_vault

EMAIL = "victim@maker.example"
BACKENDS = [None, pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS, ids=["sqlite", "postgres"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Vault, Authenticator, str]]:
    """A vault with one engineer enrolled in TOTP; its authenticator; the TOTP secret."""
    settings = auth_test_settings(
        tmp_path / "data", password_time_cost=2, password_memory_kib=16384
    )
    if request.param:
        settings.catalog.url = request.getfixturevalue("postgres_url")
    vault = open_vault(settings, clock=FrozenClock(START))
    auth = Authenticator(vault)
    secret = totp.new_secret()
    with vault.catalog.session() as session:
        maker = get_or_create_organisation(session, "Maker", kind="manufacturer")
        user = create_user(
            session, EMAIL, "engineer", maker, password_hash=auth.passwords.hash(PASSWORD)
        )
        user.totp_sealed = auth.sealer.seal(user.id, secret)
        user.totp_confirmed_at = vault.clock.now()
    yield vault, auth, secret
    vault.close()


def _at_once(calls: list[Callable[[], Outcome]]) -> list[Outcome]:
    results: list[Outcome | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is not None for result in results)
    return [result for result in results if result is not None]


def test_parallel_guesses_never_get_past_the_account_threshold(
    world: tuple[Vault, Authenticator, str],
) -> None:
    vault, auth, _ = world
    threshold = vault.settings.auth.lockout_threshold
    guesses = [
        (lambda i=i: auth.password_step(EMAIL, f"wrong guess {i}", f"10.0.1.{i}"))
        for i in range(threshold * 3)
    ]
    outcomes = _at_once(guesses)
    checked = [o for o in outcomes if o.refusal == "credentials"]
    assert len(checked) <= threshold
    assert len(checked) + sum(o.refusal == "locked" for o in outcomes) == len(outcomes)
    assert auth.password_step(EMAIL, PASSWORD, "10.0.2.1").refusal == "locked"


def test_a_totp_code_sent_twice_at_once_opens_one_session(
    world: tuple[Vault, Authenticator, str],
) -> None:
    vault, auth, secret = world
    clock = vault.clock
    assert isinstance(clock, FrozenClock)
    for attempt in range(3):
        pending = [auth.password_step(EMAIL, PASSWORD, f"10.0.3.{k}").cookie for k in (1, 2)]
        assert all(pending)
        code = pyotp.TOTP(secret).at(clock.now())
        outcomes = _at_once(
            [lambda c=c, code=code: auth.totp_step(c or "", code, "10.0.3.9") for c in pending]
        )
        assert sum(o.cookie is not None for o in outcomes) == 1, f"try {attempt}"
        clock.advance(timedelta(seconds=30))


def test_the_right_password_does_not_count_as_a_failure(
    world: tuple[Vault, Authenticator, str],
) -> None:
    vault, auth, _ = world
    threshold = vault.settings.auth.lockout_address_threshold
    for _ in range(threshold + 2):  # many colleagues behind one hospital address
        assert auth.password_step(EMAIL, PASSWORD, "10.0.4.1").cookie is not None


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ("2001:db8:1:2::10", "2001:db8:1:2:ffff::99", True),  # one /64: one host's addresses
        ("2001:db8:1:2::10", "2001:db8:1:3::10", False),
        ("[2001:db8:1:2::10]:51234", "2001:db8:1:2::11", True),
        ("::ffff:192.0.2.7", "192.0.2.7", True),
        ("192.0.2.7:40000", "192.0.2.7", True),
        ("192.0.2.7", "192.0.2.8", False),
    ],
)
def test_addresses_are_counted_per_client(one: str, other: str, same: bool) -> None:
    assert (address_key(one) == address_key(other)) is same


def test_the_password_check_holds_no_catalog_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = auth_test_settings(tmp_path / "data")
    vault = open_vault(settings, clock=FrozenClock(START))
    auth = Authenticator(vault)
    with vault.catalog.session() as session:
        maker = get_or_create_organisation(session, "Maker", kind="manufacturer")
        create_user(session, EMAIL, "engineer", maker, password_hash=auth.passwords.hash(PASSWORD))
    catalog = settings.data_dir / "catalog.sqlite3"
    writable_during_check: list[bool] = []
    verify = auth.passwords.verify

    def verify_while_probing(stored: str | None, password: str) -> bool:
        # While the (slow) hash runs, another writer must get SQLite's write lock at once.
        probe = sqlite3.connect(catalog, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            writable_during_check.append(True)
        except sqlite3.OperationalError:
            writable_during_check.append(False)
        finally:
            probe.close()
        return verify(stored, password)

    monkeypatch.setattr(auth.passwords, "verify", verify_while_probing)
    try:
        assert auth.password_step(EMAIL, "a wrong one", "10.0.5.1").refusal == "credentials"
        assert auth.password_step(EMAIL, PASSWORD, "10.0.5.1").cookie is not None
    finally:
        vault.close()
    assert writable_during_check == [True, True]
