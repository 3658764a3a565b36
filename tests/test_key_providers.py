"""Key providers: wrap/unwrap, binding, rotation, destruction, MAC keys, secrecy.

Most tests run once per provider (``local``, ``pkcs11`` against a SoftHSM2
token, ``transit`` against an OpenBao dev server) through the ``key_settings``
and ``key_provider`` fixtures of ``tests.services.key_providers``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, KeyProvider, MacKey, _material
from crypto.providers import build_key_provider
from crypto.providers.local import LocalKeyProvider
from tests.services.key_providers import keys_elsewhere
from vault.core import Vault, open_vault
from vault.settings import KeySettings, LocalKeySettings, Settings

PERIOD = "2026-11"


def _tampered(blob: bytes) -> bytes:
    """The blob with one bit of its ciphertext flipped (Transit: inside the base64)."""
    if blob.startswith(b"vault:"):
        prefix, _, payload = blob.rpartition(b":")
        raw = bytearray(base64.b64decode(payload))
        raw[len(raw) // 2] ^= 0x01
        return prefix + b":" + base64.b64encode(bytes(raw))
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


def _provider_secrets(settings: KeySettings) -> list[str]:
    """What must never show: the Transit token, the HSM PIN, the local key file's keys."""
    if settings.provider == "transit":
        return [settings.transit.token.get_secret_value()]
    if settings.provider == "pkcs11":
        return [settings.pkcs11.user_pin.get_secret_value()]
    document = json.loads(Path(str(settings.local.path)).read_text())
    periods = [k for entry in document["periods"].values() for k in entry["keys"].values()]
    return [*document["keks"].values(), document["mac_root"], *periods]


def _version_of(kek_id: str) -> int:
    return int(kek_id.rsplit("v", 1)[1])


def _with_version(kek_id: str, version: int) -> str:
    return f"{kek_id.rsplit('v', 1)[0]}v{version}"


class TestBuildKeyProvider:
    def test_builds_the_provider_named_in_settings(self, key_settings: KeySettings) -> None:
        provider = build_key_provider(key_settings)
        try:
            assert isinstance(provider, KeyProvider)
            assert provider.name == key_settings.provider
        finally:
            provider.close()  # type: ignore[attr-defined]

    def test_local_provider_without_a_path_is_refused(self) -> None:
        with pytest.raises(KeyProviderError):
            build_key_provider(KeySettings(provider="local", local=LocalKeySettings(path=None)))


def _credentials(settings: KeySettings) -> list[str]:
    """The PIN or token the provider logs in with (the local file has none)."""
    return {
        "pkcs11": [settings.pkcs11.user_pin.get_secret_value()],
        "transit": [settings.transit.token.get_secret_value()],
    }.get(settings.provider, [])


class TestFirstKek:
    """A provider makes its first KEK only when told it may (``create``)."""

    def test_no_kek_is_made_when_creation_is_refused(self, key_settings: KeySettings) -> None:
        with pytest.raises(KeyProviderError) as refused:
            build_key_provider(key_settings, create=False)
        with pytest.raises(KeyProviderError):
            build_key_provider(key_settings, create=False)
        message = str(refused.value)
        assert "missing" in message or "check keys." in message
        for secret in _credentials(key_settings):
            assert secret not in message

    def test_a_fresh_vault_makes_its_keys(self, key_settings: KeySettings, tmp_path: Path) -> None:
        vault = open_vault(Settings(data_dir=tmp_path / "data", keys=key_settings))
        try:
            assert _version_of(vault.keyring.provider.current_kek_id()) == 1
        finally:
            vault.close()

    def test_a_vault_holding_keys_refuses_a_provider_without_them(
        self, key_settings: KeySettings, tmp_path: Path
    ) -> None:
        settings = Settings(data_dir=tmp_path / "data", keys=key_settings)
        vault = open_vault(settings)
        with vault.catalog.session() as session:
            vault.keyring.persist(session, vault.keyring.generate())
        vault.close()
        wrong = settings.model_copy(update={"keys": keys_elsewhere(key_settings)})
        with pytest.raises(KeyProviderError) as refused:
            open_vault(wrong)
        for secret in _credentials(key_settings):
            assert secret not in str(refused.value)
        with pytest.raises(KeyProviderError):
            build_key_provider(wrong.keys, create=False)
        open_vault(settings).close()


class TestWrapRoundTrip:
    def test_unwrap_returns_the_wrapped_key(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        unwrapped = key_provider.unwrap(key_provider.wrap(key))
        assert unwrapped.key_id == key.key_id
        assert _material(unwrapped) == _material(key)

    def test_wrapped_key_names_the_key_and_the_current_kek(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        wrapped = key_provider.wrap(key)
        assert wrapped.key_id == key.key_id
        assert wrapped.kek_id == key_provider.current_kek_id()

    def test_wrapping_twice_gives_different_blobs(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        assert key_provider.wrap(key).blob != key_provider.wrap(key).blob

    def test_blob_does_not_contain_the_key(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        blob = key_provider.wrap(key).blob
        assert _material(key) not in blob
        assert base64.b64encode(_material(key)) not in blob


class TestUnwrapRefusals:
    def test_blob_moved_onto_another_key_id_is_refused(self, key_provider: KeyProvider) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        moved = replace(wrapped, key_id=DataKey.generate().key_id)
        with pytest.raises(KeyProviderError):
            key_provider.unwrap(moved)

    def test_tampered_blob_is_refused(self, key_provider: KeyProvider) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        with pytest.raises(KeyProviderError):
            key_provider.unwrap(replace(wrapped, blob=_tampered(wrapped.blob)))

    def test_truncated_blob_is_refused(self, key_provider: KeyProvider) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        with pytest.raises(KeyProviderError):
            key_provider.unwrap(replace(wrapped, blob=wrapped.blob[:-4]))

    def test_blob_presented_under_another_kek_version_is_refused(
        self, key_provider: KeyProvider
    ) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        newer = key_provider.rotate()
        with pytest.raises(KeyProviderError):
            key_provider.unwrap(replace(wrapped, kek_id=newer))

    def test_kek_id_of_another_provider_is_refused(self, key_provider: KeyProvider) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        with pytest.raises(KeyProviderError):
            key_provider.unwrap(replace(wrapped, kek_id="some-other-kek-v1"))

    def test_kek_version_never_created_is_refused(self, key_provider: KeyProvider) -> None:
        wrapped = key_provider.wrap(DataKey.generate())
        future = _with_version(wrapped.kek_id, _version_of(wrapped.kek_id) + 5)
        with pytest.raises(KeyProviderError) as refused:
            key_provider.unwrap(replace(wrapped, kek_id=future))
        assert not isinstance(refused.value, KeyDestroyedError)


class TestRotation:
    def test_new_wraps_name_the_new_kek(self, key_provider: KeyProvider) -> None:
        before = key_provider.current_kek_id()
        after = key_provider.rotate()
        assert after != before
        assert _version_of(after) == _version_of(before) + 1
        assert key_provider.current_kek_id() == after
        assert key_provider.wrap(DataKey.generate()).kek_id == after

    def test_keys_wrapped_before_rotation_still_unwrap(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        old = key_provider.wrap(key)
        key_provider.rotate()
        key_provider.rotate()
        assert _material(key_provider.unwrap(old)) == _material(key)

    def test_rewrap_moves_a_key_to_the_current_kek(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        old = key_provider.wrap(key)
        current = key_provider.rotate()
        rewrapped = key_provider.wrap(key_provider.unwrap(old))
        assert rewrapped.kek_id == current
        assert _material(key_provider.unwrap(rewrapped)) == _material(key)


class TestDestroyKek:
    def test_keys_under_a_destroyed_kek_are_gone(self, key_provider: KeyProvider) -> None:
        old = key_provider.wrap(DataKey.generate())
        key_provider.rotate()
        key_provider.destroy_kek(old.kek_id)  # type: ignore[attr-defined]
        with pytest.raises(KeyDestroyedError):
            key_provider.unwrap(old)

    def test_keys_under_later_keks_survive(self, key_provider: KeyProvider) -> None:
        old = key_provider.wrap(DataKey.generate())
        key_provider.rotate()
        key = DataKey.generate()
        kept = key_provider.wrap(key)
        key_provider.rotate()
        key_provider.destroy_kek(old.kek_id)  # type: ignore[attr-defined]
        assert _material(key_provider.unwrap(kept)) == _material(key)

    def test_current_kek_cannot_be_destroyed(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        wrapped = key_provider.wrap(key)
        with pytest.raises(KeyProviderError):
            key_provider.destroy_kek(key_provider.current_kek_id())  # type: ignore[attr-defined]
        assert _material(key_provider.unwrap(wrapped)) == _material(key)

    def test_destroying_twice_is_harmless(self, key_provider: KeyProvider) -> None:
        old_kek = key_provider.current_kek_id()
        key_provider.rotate()
        key_provider.destroy_kek(old_kek)  # type: ignore[attr-defined]
        key_provider.destroy_kek(old_kek)  # type: ignore[attr-defined]
        assert key_provider.current_kek_id() != old_kek


class TestMacKeys:
    def test_mac_key_is_a_mac_key_handle(self, key_provider: KeyProvider) -> None:
        mac_key = key_provider.mac_key("pseudonym")
        assert isinstance(mac_key, MacKey)
        assert len(mac_key.mac(b"data")) == 32

    def test_mac_is_stable_across_provider_instances(self, key_settings: KeySettings) -> None:
        first = build_key_provider(key_settings)
        tag = first.mac_key("pseudonym").mac(b"patient-key")
        first.close()  # type: ignore[attr-defined]
        second = build_key_provider(key_settings)
        try:
            assert second.mac_key("pseudonym").mac(b"patient-key") == tag
        finally:
            second.close()  # type: ignore[attr-defined]

    def test_mac_differs_per_purpose(self, key_provider: KeyProvider) -> None:
        pseudonym = key_provider.mac_key("pseudonym")
        audit = key_provider.mac_key("audit-checkpoint")
        assert pseudonym.key_id != audit.key_id
        assert pseudonym.mac(b"same input") != audit.mac(b"same input")

    def test_mac_differs_per_input(self, key_provider: KeyProvider) -> None:
        mac_key = key_provider.mac_key("pseudonym")
        assert mac_key.mac(b"one") != mac_key.mac(b"two")

    def test_mac_is_unchanged_by_kek_rotation(self, key_provider: KeyProvider) -> None:
        before = key_provider.mac_key("pseudonym").mac(b"data")
        key_provider.rotate()
        assert key_provider.mac_key("pseudonym").mac(b"data") == before

    @pytest.mark.parametrize("purpose", ["", "../keys", "Pseudonym", "a b", "x" * 64])
    def test_unsafe_purpose_names_are_refused(
        self, key_provider: KeyProvider, purpose: str
    ) -> None:
        with pytest.raises(ValueError):
            key_provider.mac_key(purpose)


class TestRebuiltProvider:
    def test_rebuilt_provider_unwraps_what_the_old_one_wrapped(
        self, key_settings: KeySettings
    ) -> None:
        old = build_key_provider(key_settings)
        key = DataKey.generate()
        before_rotation = old.wrap(key)
        old.rotate()
        after_rotation = old.wrap(key)
        old.close()  # type: ignore[attr-defined]
        rebuilt = build_key_provider(key_settings)
        try:
            assert _material(rebuilt.unwrap(before_rotation)) == _material(key)
            assert _material(rebuilt.unwrap(after_rotation)) == _material(key)
            assert rebuilt.current_kek_id() == after_rotation.kek_id
        finally:
            rebuilt.close()  # type: ignore[attr-defined]

    def test_other_instance_sees_a_rotation(self, key_settings: KeySettings) -> None:
        first = build_key_provider(key_settings)
        second = build_key_provider(key_settings)
        try:
            second.current_kek_id()
            rotated = first.rotate()
            assert second.current_kek_id() == rotated
            assert second.wrap(DataKey.generate()).kek_id == rotated
        finally:
            first.close()  # type: ignore[attr-defined]
            second.close()  # type: ignore[attr-defined]


class TestConcurrentUse:
    def test_threads_share_one_provider(self, key_provider: KeyProvider) -> None:
        def round_trips(_: int) -> bool:
            keys = [DataKey.generate() for _ in range(8)]
            wrapped = [key_provider.wrap(key) for key in keys]
            return all(
                _material(key_provider.unwrap(w)) == _material(k)
                for w, k in zip(wrapped, keys, strict=True)
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(round_trips, range(4)))

    def test_concurrent_rotations_from_two_instances_never_reuse_a_version(
        self, key_settings: KeySettings
    ) -> None:
        """Each successful rotation gets a version of its own.

        OpenBao 2.7 may answer one of two simultaneous rotations of a key with
        HTTP 500 ("transaction commit failed") although the version was
        created. For Transit alone that KeyProviderError is allowed, and the
        current version may then be above every version a rotation returned.
        """
        first, second = build_key_provider(key_settings), build_key_provider(key_settings)
        start = _version_of(first.current_kek_id())

        def rotate_three_times(provider: KeyProvider) -> list[str | KeyProviderError]:
            outcomes: list[str | KeyProviderError] = []
            for _ in range(3):
                try:
                    outcomes.append(provider.rotate())
                except KeyProviderError as refused:
                    outcomes.append(refused)
            return outcomes

        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                batches = list(pool.map(rotate_three_times, [first, second]))
            current = first.current_kek_id()
        finally:
            first.close()  # type: ignore[attr-defined]
            second.close()  # type: ignore[attr-defined]
        outcomes = [outcome for batch in batches for outcome in batch]
        rotated = [outcome for outcome in outcomes if isinstance(outcome, str)]
        assert rotated
        versions = sorted(_version_of(kek_id) for kek_id in rotated)
        assert len(set(versions)) == len(versions)
        assert versions[0] > start
        if key_settings.provider == "transit":
            assert _version_of(current) >= versions[-1]
        else:
            assert len(rotated) == 6
            assert _version_of(current) == versions[-1] == start + 6


class TestNoSecretsLeak:
    def test_reprs_show_ids_not_secrets(
        self, key_provider: KeyProvider, key_settings: KeySettings
    ) -> None:
        key = DataKey.generate()
        mac_key = key_provider.mac_key("pseudonym")
        text = repr(key_provider) + repr(mac_key) + repr(key)
        secrets = [*_provider_secrets(key_settings), _material(key).hex()]
        assert len(secrets) >= 2
        for secret in secrets:
            assert secret not in text
        assert mac_key.key_id in repr(mac_key)

    def test_mac_key_cannot_be_pickled(self, key_provider: KeyProvider) -> None:
        with pytest.raises(TypeError):
            pickle.dumps(key_provider.mac_key("pseudonym"))

    def test_logs_carry_no_key_material(
        self,
        key_provider: KeyProvider,
        key_settings: KeySettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        key = DataKey.generate()
        with caplog.at_level(logging.DEBUG):
            wrapped = key_provider.wrap(key)
            key_provider.rotate()
            key_provider.unwrap(wrapped)
            tag = key_provider.mac_key("pseudonym").mac(b"data")
            old = key_provider.period_kek_id(PERIOD)
            sealed = key_provider.seal(old, key.key_id, wrapped.blob)
            key_provider.rotate_period(PERIOD)
            key_provider.unseal(old, key.key_id, sealed)
            key_provider.retire_period(PERIOD, keep=None)
        assert any("rotated" in record.getMessage() for record in caplog.records)
        assert any("retired period" in record.getMessage() for record in caplog.records)
        material = _material(key)
        secrets = [material.hex(), base64.b64encode(material).decode(), tag.hex()]
        for secret in [*secrets, *_provider_secrets(key_settings)]:
            assert secret not in caplog.text


class TestLocalKeyFile:
    def test_key_file_is_0600_in_a_0700_directory(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "kek.json"
        LocalKeyProvider(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    def test_rotation_keeps_mode_0600_and_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "kek.json"
        LocalKeyProvider(path).rotate()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in path.parent.iterdir()) == ["kek.json", "kek.json.lock"]

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
    def test_key_file_readable_by_others_is_refused(self, tmp_path: Path, mode: int) -> None:
        path = tmp_path / "keys" / "kek.json"
        LocalKeyProvider(path)
        path.chmod(mode)
        with pytest.raises(KeyProviderError, match="0600"):
            LocalKeyProvider(path)

    def test_key_file_made_readable_by_others_is_refused_by_a_running_provider(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "keys" / "kek.json"
        provider = LocalKeyProvider(path)
        path.chmod(0o644)
        with pytest.raises(KeyProviderError):
            provider.wrap(DataKey.generate())

    def test_malformed_key_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "kek.json"
        path.write_text('{"format": "dicom-vault-local-keys/1", "current": 1}')
        path.chmod(0o600)
        with pytest.raises(KeyProviderError, match="malformed"):
            LocalKeyProvider(path)

    def test_directory_writable_by_others_is_refused(self, tmp_path: Path) -> None:
        directory = tmp_path / "shared"
        directory.mkdir()
        directory.chmod(0o777)
        with pytest.raises(KeyProviderError):
            LocalKeyProvider(directory / "kek.json")

    def test_a_missing_key_file_is_not_made_when_creation_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "kek.json"
        with pytest.raises(KeyProviderError, match="missing"):
            LocalKeyProvider(path, create=False)
        assert not path.exists()

    def test_a_vault_whose_key_file_is_missing_does_not_make_a_new_one(
        self, embedded_vault: Vault
    ) -> None:
        with embedded_vault.catalog.session() as session:
            embedded_vault.keyring.persist(session, embedded_vault.keyring.generate())
        path = embedded_vault.settings.keys.local.path
        assert path is not None
        path.rename(path.with_name("kek.json.unmounted"))
        with pytest.raises(KeyProviderError, match="missing"):
            open_vault(embedded_vault.settings, clock=embedded_vault.clock)
        assert not path.exists()

    def test_destroyed_kek_is_removed_from_the_file(self, tmp_path: Path) -> None:
        path = tmp_path / "keys" / "kek.json"
        provider = LocalKeyProvider(path)
        provider.rotate()
        provider.destroy_kek("kek-local-v1")
        assert '"1"' not in path.read_text()
        assert '"2"' in path.read_text()


@pytest.mark.hsm
class TestPkcs11Token:
    @pytest.fixture
    def hsm_provider(self, softhsm_settings):
        from crypto.providers.pkcs11 import Pkcs11KeyProvider

        provider = Pkcs11KeyProvider(
            softhsm_settings.model_copy(update={"key_label_prefix": f"tok-{os.urandom(4).hex()}"})
        )
        yield provider
        provider.close()

    def test_kek_is_sensitive_and_never_extractable(self, hsm_provider) -> None:
        from pkcs11 import Attribute

        wanted = [
            Attribute.EXTRACTABLE,
            Attribute.SENSITIVE,
            Attribute.NEVER_EXTRACTABLE,
            Attribute.ALWAYS_SENSITIVE,
            Attribute.TOKEN,
        ]
        found = hsm_provider.kek_attributes(hsm_provider.current_kek_id(), wanted)
        assert found[Attribute.EXTRACTABLE] is False
        assert found[Attribute.SENSITIVE] is True
        assert found[Attribute.NEVER_EXTRACTABLE] is True
        assert found[Attribute.ALWAYS_SENSITIVE] is True
        assert found[Attribute.TOKEN] is True

    def test_kek_value_cannot_be_read(self, hsm_provider) -> None:
        from pkcs11 import Attribute

        with pytest.raises(KeyProviderError):
            hsm_provider.kek_attributes(hsm_provider.current_kek_id(), [Attribute.VALUE])

    def test_unknown_token_is_refused(self, softhsm_settings) -> None:
        from crypto.providers.pkcs11 import Pkcs11KeyProvider

        with pytest.raises(KeyProviderError, match="token_label"):
            Pkcs11KeyProvider(softhsm_settings.model_copy(update={"token_label": "no-such-token"}))

    def test_forked_child_unwraps_with_the_inherited_provider(self, hsm_provider) -> None:
        key = DataKey.generate()
        wrapped = hsm_provider.wrap(key)
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            os.close(read_end)
            try:
                os.write(write_end, _material(hsm_provider.unwrap(wrapped)))
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            received = pipe.read()
        os.waitpid(child, 0)
        assert received == _material(key)
        assert _material(hsm_provider.unwrap(wrapped)) == _material(key)


@pytest.mark.transit
class TestTransitServer:
    @pytest.fixture
    def transit_provider(self, openbao_settings):
        from crypto.providers.transit import TransitKeyProvider

        provider = TransitKeyProvider(
            openbao_settings.model_copy(update={"key_name": f"kek-{os.urandom(4).hex()}"})
        )
        yield provider
        provider.close()

    def test_versions_are_destroyed_oldest_first(self, transit_provider) -> None:
        v1 = transit_provider.current_kek_id()
        v2 = transit_provider.rotate()
        transit_provider.rotate()
        with pytest.raises(KeyProviderError, match="oldest first"):
            transit_provider.destroy_kek(v2)
        transit_provider.destroy_kek(v1)
        transit_provider.destroy_kek(v2)
        assert transit_provider.current_kek_id().endswith(":v3")

    IGNORED = "[associated_data]"

    def test_server_ignoring_associated_data_is_refused(
        self, transit_provider, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        transit = transit_provider._client.secrets.transit
        real_encrypt = transit.encrypt_data

        def encrypt_without_aad_support(*args, **kwargs):
            kwargs.pop("associated_data", None)
            response = real_encrypt(*args, **kwargs)
            response["warnings"] = [f"Endpoint ignored unrecognized parameters: {self.IGNORED}"]
            return response

        monkeypatch.setattr(transit, "encrypt_data", encrypt_without_aad_support)
        with pytest.raises(KeyProviderError, match="associated_data"):
            transit_provider.wrap(DataKey.generate())

    def test_unreachable_server_is_refused(self, openbao_settings) -> None:
        from crypto.providers.transit import TransitKeyProvider

        closed = openbao_settings.model_copy(update={"url": "http://127.0.0.1:9"})
        with pytest.raises(KeyProviderError, match="unreachable"):
            TransitKeyProvider(closed)

    def test_wrong_token_is_refused(self, openbao_settings) -> None:
        from pydantic import SecretStr

        from crypto.providers.transit import TransitKeyProvider

        wrong = openbao_settings.model_copy(update={"token": SecretStr("not-the-token")})
        with pytest.raises(KeyProviderError):
            TransitKeyProvider(wrong)


def _sealed_key(provider: KeyProvider, kek_id: str) -> tuple[DataKey, bytes]:
    """A fresh DEK wrapped under the current KEK and sealed under period generation ``kek_id``."""
    key = DataKey.generate()
    return key, provider.seal(kek_id, key.key_id, provider.wrap(key).blob)


class TestPeriodKeys:
    def test_seal_round_trip_returns_the_wrapped_key(self, key_provider: KeyProvider) -> None:
        kek_id = key_provider.period_kek_id(PERIOD)
        key = DataKey.generate()
        wrapped = key_provider.wrap(key)
        sealed = key_provider.seal(kek_id, key.key_id, wrapped.blob)
        assert wrapped.blob not in sealed
        assert key_provider.unseal(kek_id, key.key_id, sealed) == wrapped.blob
        assert key_provider.period_of(kek_id) == PERIOD
        assert key_provider.period_of(key_provider.current_kek_id()) is None

    def test_period_key_is_made_once_and_found_again(self, key_settings: KeySettings) -> None:
        first = build_key_provider(key_settings)
        try:
            assert first.period_kek_id(PERIOD, create=False) is None
            made = first.period_kek_id(PERIOD)
            assert first.period_kek_id(PERIOD) == made
        finally:
            first.close()  # type: ignore[attr-defined]
        second = build_key_provider(key_settings)
        try:
            assert second.period_kek_id(PERIOD, create=False) == made
        finally:
            second.close()  # type: ignore[attr-defined]

    def test_seal_moved_onto_another_key_id_is_refused(self, key_provider: KeyProvider) -> None:
        kek_id = key_provider.period_kek_id(PERIOD)
        _key, sealed = _sealed_key(key_provider, kek_id)
        with pytest.raises(KeyProviderError):
            key_provider.unseal(kek_id, DataKey.generate().key_id, sealed)

    def test_tampered_seal_is_refused(self, key_provider: KeyProvider) -> None:
        kek_id = key_provider.period_kek_id(PERIOD)
        key, sealed = _sealed_key(key_provider, kek_id)
        with pytest.raises(KeyProviderError):
            key_provider.unseal(kek_id, key.key_id, _tampered(sealed))

    def test_seals_of_another_period_do_not_open(self, key_provider: KeyProvider) -> None:
        november = key_provider.period_kek_id(PERIOD)
        december = key_provider.period_kek_id("2026-12")
        key, sealed = _sealed_key(key_provider, november)
        with pytest.raises(KeyProviderError):
            key_provider.unseal(december, key.key_id, sealed)

    def test_rotation_makes_a_new_current_generation(self, key_provider: KeyProvider) -> None:
        old = key_provider.period_kek_id(PERIOD)
        new = key_provider.rotate_period(PERIOD)
        assert new != old
        assert key_provider.period_kek_id(PERIOD) == new
        key, sealed = _sealed_key(key_provider, old)
        assert key_provider.unseal(old, key.key_id, sealed)

    def test_retired_generations_are_destroyed_and_the_kept_one_survives(
        self, key_provider: KeyProvider
    ) -> None:
        old = key_provider.period_kek_id(PERIOD)
        key, sealed_old = _sealed_key(key_provider, old)
        new = key_provider.rotate_period(PERIOD)
        sealed_new = key_provider.seal(new, key.key_id, key_provider.wrap(key).blob)
        key_provider.retire_period(PERIOD, keep=new)
        key_provider.retire_period(PERIOD, keep=new)
        with pytest.raises(KeyDestroyedError):
            key_provider.unseal(old, key.key_id, sealed_old)
        wrapped = key_provider.unseal(new, key.key_id, sealed_new)
        unwrapped = key_provider.unwrap(replace(key_provider.wrap(key), blob=wrapped))
        assert _material(unwrapped) == _material(key)

    def test_retiring_a_whole_period_destroys_every_generation(
        self, key_provider: KeyProvider
    ) -> None:
        kek_id = key_provider.period_kek_id(PERIOD)
        key, sealed = _sealed_key(key_provider, kek_id)
        other = key_provider.period_kek_id("2026-12")
        kept, kept_sealed = _sealed_key(key_provider, other)
        key_provider.retire_period(PERIOD, keep=None)
        key_provider.retire_period(PERIOD, keep=None)
        with pytest.raises(KeyDestroyedError):
            key_provider.unseal(kek_id, key.key_id, sealed)
        assert key_provider.period_kek_id(PERIOD, create=False) is None
        assert key_provider.unseal(other, kept.key_id, kept_sealed)

    def test_malformed_period_names_are_refused(self, key_provider: KeyProvider) -> None:
        for period in ("2026-13", "26-11", "2026/11", "../x"):
            with pytest.raises(ValueError):
                key_provider.period_kek_id(period)

    def test_main_kek_id_is_not_a_period_key(self, key_provider: KeyProvider) -> None:
        key = DataKey.generate()
        with pytest.raises(KeyProviderError):
            key_provider.seal(key_provider.current_kek_id(), key.key_id, b"x" * 61)
