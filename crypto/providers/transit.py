"""The Transit key provider: KEKs held by OpenBao or HashiCorp Vault Transit.

The KEK is a Transit ``aes256-gcm96`` key; Transit keeps its versions and
never hands them out. Wrapping is a Transit ``encrypt`` of the DEK with
``associated_data`` binding the DEK ``key_id`` and the Transit key name; the
version is fixed by the ciphertext itself (``vault:vN:...``), which Transit
authenticates, and is carried in the ``kek_id``: ``transit:<key>:vN``.
Unwrapping checks that the ``kek_id`` and the ciphertext name the same
version, so a blob cannot be presented as wrapped by another KEK.

A server that does not know ``associated_data`` ignores it with a warning;
the provider refuses such a server rather than wrap without the binding.

The key is created when Transit has none of that name, unless the catalog
already holds keys wrapped under it (``create`` false): then a wrong key name
or mount point is refused, not given a new key (and new MAC keys).

MAC keys are separate Transit ``hmac`` keys, one per purpose
(``<key>-mac-<purpose>``), used through the ``hmac`` endpoint with
SHA-256 at the key version current when the handle is made.

``destroy_kek`` trims versions, which Transit can only do oldest first.

Period keys (``docs/KEYS.md``) are Transit keys of their own, one per month:
:mod:`._transit_periods`.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import hvac
import hvac.exceptions
import requests

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, WrappedKey, _from_material, _material
from crypto.providers._binding import associated_data, check_purpose, parse_version
from crypto.providers._transit_periods import TransitPeriodKeys
from crypto.providers._transit_wire import (
    b64,
    checked_ciphertext,
    ciphertext_version,
    refuse_ignored_parameters,
    rotated_version,
)
from vault.settings import TransitKeySettings

logger = logging.getLogger(__name__)


class TransitMacKey:
    """An HMAC-SHA256 key held by Transit for one purpose, pinned to one version."""

    __slots__ = ("_key_name", "_provider", "_version", "key_id")

    def __init__(self, provider: TransitKeyProvider, key_name: str, version: int) -> None:
        self._provider = provider
        self._key_name = key_name
        self._version = version
        self.key_id = f"transit:{key_name}:v{version}"

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data``, computed by Transit."""
        return self._provider._hmac(self._key_name, self._version, data)

    def __repr__(self) -> str:
        return f"TransitMacKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MAC key cannot be pickled; ask the provider for it by purpose")


class TransitKeyProvider(TransitPeriodKeys):
    """Key provider backed by a Transit secrets engine.

    Parameters
    ----------
    settings
        The ``keys.transit`` section: server URL, token, mount point, key name.
    create
        Whether the Transit key may be created if it does not exist. Refuse
        it (``False``) once keys were wrapped under it: a wrong key name or
        mount point would otherwise start a new key hierarchy.

    Raises
    ------
    KeyProviderError
        The server is unreachable, refuses the token, or the key cannot be
        created, or it does not exist and ``create`` is false.
    """

    name = "transit"

    def __init__(self, settings: TransitKeySettings, *, create: bool = True) -> None:
        self._mount = settings.mount_point
        self._key = settings.key_name
        self._url = settings.url
        self._kek_id_pattern = re.compile(
            "transit:" + re.escape(self._key) + r":v(?P<version>[1-9][0-9]{0,8})"
        )
        self._period_id_pattern = re.compile(
            "transit:"
            + re.escape(self._key)
            + r"-period-(?P<period>[0-9]{4}-[0-9]{2}):v(?P<version>[1-9][0-9]{0,8})"
        )
        self._client = hvac.Client(
            url=settings.url,
            token=settings.token.get_secret_value(),
            verify=str(settings.tls_ca_file) if settings.tls_ca_file else True,
            timeout=settings.timeout_seconds,
        )
        if create:
            with self._calls():
                self._client.secrets.transit.create_key(
                    self._key, key_type="aes256-gcm96", mount_point=self._mount
                )
        elif self._read_key_if_any(self._key) is None:
            raise KeyProviderError(
                f"Transit has no key {self._key!r} under the mount {self._mount!r}, yet keys "
                "were wrapped under it: check keys.transit.key_name and keys.transit.mount_point "
                "(a new key could not open them)"
            )

    @classmethod
    def from_settings(
        cls, settings: TransitKeySettings, *, create: bool = True
    ) -> TransitKeyProvider:
        """Build the provider from the ``keys.transit`` settings section."""
        return cls(settings, create=create)

    def __repr__(self) -> str:
        return f"TransitKeyProvider(url={self._url!r}, key={self._key!r})"

    def current_kek_id(self) -> str:
        """The KEK (and version) that new wraps use: the key's latest version."""
        return self._kek_id(int(self._read_key(self._key)["latest_version"]))

    def wrap(self, key: DataKey) -> WrappedKey:
        """Wrap ``key`` with a Transit encrypt bound to its ``key_id``."""
        with self._calls():
            response = self._client.secrets.transit.encrypt_data(
                self._key,
                plaintext=b64(_material(key)),
                associated_data=b64(self._aad(key.key_id)),
                mount_point=self._mount,
            )
        refuse_ignored_parameters(response)
        ciphertext = str(response["data"]["ciphertext"])
        version = ciphertext_version(ciphertext)
        return WrappedKey(
            key_id=key.key_id, kek_id=self._kek_id(version), blob=ciphertext.encode("ascii")
        )

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        """Unwrap with a Transit decrypt under the version named in ``wrapped.kek_id``.

        Raises
        ------
        KeyDestroyedError
            That key version was destroyed (trimmed).
        KeyProviderError
            The KEK id and the ciphertext disagree, or Transit refuses the
            ciphertext (tampered, moved onto another key id, or disabled).
        """
        version = parse_version(wrapped.kek_id, self._kek_id_pattern, self.name)
        ciphertext = checked_ciphertext(wrapped.blob)
        if ciphertext_version(ciphertext) != version:
            raise KeyProviderError("the KEK id does not match the wrapped key")
        with self._calls():
            try:
                response = self._client.secrets.transit.decrypt_data(
                    self._key,
                    ciphertext=ciphertext,
                    associated_data=b64(self._aad(wrapped.key_id)),
                    mount_point=self._mount,
                )
            except hvac.exceptions.InvalidRequest as exc:
                self._explain_refusal(version)
                raise KeyProviderError("wrapped key failed authentication") from exc
        try:
            material = base64.b64decode(response["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyProviderError("Transit returned no usable plaintext") from exc
        return _from_material(wrapped.key_id, material)

    def rotate(self) -> str:
        """Rotate the Transit key and return the new version's KEK id.

        The version is taken from the rotate response (read under the key's
        lock, so concurrent rotations each get their own); a server that
        answers without a body is asked for the latest version instead.

        A refused rotation may still have created a version: OpenBao 2.7
        answers one of two simultaneous rotations of a key with HTTP 500
        ("transaction commit failed") and keeps the new version. Ask
        :meth:`current_kek_id` after a KeyProviderError here.
        """
        with self._calls():
            response = self._client.secrets.transit.rotate_key(self._key, mount_point=self._mount)
        kek_id = self._kek_id(rotated_version(response)) if response else self.current_kek_id()
        logger.info("transit key provider rotated to %s", kek_id)
        return kek_id

    def destroy_kek(self, kek_id: str) -> None:
        """Destroy a version by trimming the Transit key; oldest versions first.

        Raises
        ------
        KeyProviderError
            ``kek_id`` is the current version, a version Transit never had,
            or an older version is still present (Transit trims in order).
        """
        version = parse_version(kek_id, self._kek_id_pattern, self.name)
        info = self._read_key(self._key)
        latest, oldest = int(info["latest_version"]), _oldest_available(info)
        if version >= latest:
            raise KeyProviderError("the current KEK cannot be destroyed; rotate first")
        if version < oldest:
            return
        if version > oldest:
            raise KeyProviderError("Transit destroys KEK versions oldest first")
        self._trim_below(version + 1, latest)
        logger.info("transit key provider destroyed %s", kek_id)

    def mac_key(self, purpose: str) -> TransitMacKey:
        """The HMAC key for ``purpose``: a Transit ``hmac`` key, created on first use."""
        key_name = f"{self._key}-mac-{check_purpose(purpose)}"
        with self._calls():
            self._client.adapter.post(
                f"/v1/{self._mount}/keys/{key_name}", json={"type": "hmac", "key_size": 32}
            )
        version = int(self._read_key(key_name)["latest_version"])
        return TransitMacKey(self, key_name, version)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.adapter.close()

    def _hmac(self, key_name: str, version: int, data: bytes) -> bytes:
        with self._calls():
            response = self._client.secrets.transit.generate_hmac(
                key_name,
                hash_input=b64(data),
                key_version=version,
                algorithm="sha2-256",
                mount_point=self._mount,
            )
        prefix = f"vault:v{version}:"
        text = str(response["data"]["hmac"])
        if not text.startswith(prefix):
            raise KeyProviderError("Transit returned an HMAC of another key version")
        return base64.b64decode(text[len(prefix) :], validate=True)

    def _trim_below(self, minimum: int, latest: int) -> None:
        with self._calls():
            # hvac refuses min_encryption_version == min_decryption_version; Transit allows it.
            self._client.adapter.post(
                f"/v1/{self._mount}/keys/{self._key}/config",
                json={"min_decryption_version": minimum, "min_encryption_version": latest},
            )
            self._client.secrets.transit.trim_key(
                self._key, min_version=minimum, mount_point=self._mount
            )

    def _explain_refusal(self, version: int) -> None:
        """Raise the specific error when Transit refused a version, not the blob."""
        info = self._read_key(self._key)
        if version < int(info["min_available_version"]):
            raise KeyDestroyedError("the KEK that wrapped this key was destroyed")
        if version < int(info["min_decryption_version"]):
            raise KeyProviderError("the KEK version is disabled for decryption in Transit")
        if version > int(info["latest_version"]):
            raise KeyProviderError("the KEK id names a version Transit does not have")

    def _read_key(self, key_name: str) -> dict[str, Any]:
        with self._calls():
            return dict(
                self._client.secrets.transit.read_key(key_name, mount_point=self._mount)["data"]
            )

    def _aad(self, key_id: str) -> bytes:
        return associated_data(provider=self.name, kek_id=f"transit:{self._key}", key_id=key_id)

    def _kek_id(self, version: int) -> str:
        return f"transit:{self._key}:v{version}"

    @contextmanager
    def _calls(self) -> Iterator[None]:
        """Turn Transit and transport failures into KeyProviderError."""
        try:
            yield
        except hvac.exceptions.VaultError as exc:
            raise KeyProviderError(f"Transit refused the request ({type(exc).__name__})") from exc
        except requests.RequestException as exc:
            raise KeyProviderError("Transit is unreachable") from exc


def _oldest_available(info: dict[str, Any]) -> int:
    """The oldest version still decryptable: trimmed or disabled ones are gone."""
    return max(int(info["min_available_version"]), int(info["min_decryption_version"]), 1)
