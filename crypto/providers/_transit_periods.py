"""Period keys on Transit (``docs/KEYS.md``): one Transit key per month, versions as generations.

A period key is the Transit ``aes256-gcm96`` key ``<key>-period-YYYY-MM``
whose versions are its generations (ids ``transit:<key>-period-YYYY-MM:vN``).
A seal is a Transit ``encrypt`` at that version with ``associated_data``
binding the DEK ``key_id`` and the period key id. Retiring old generations
trims the key below the one kept; retiring a whole period deletes the Transit
key. A generation Transit does not hold (trimmed, or its key deleted) is
reported destroyed. :class:`TransitPeriodKeys` is mixed into the provider,
whose client, mount point, key name and ``_calls`` it uses.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import hvac
import hvac.exceptions

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.providers._binding import check_period, seal_associated_data
from crypto.providers._transit_wire import (
    b64,
    checked_ciphertext,
    ciphertext_version,
    refuse_ignored_parameters,
    rotated_version,
)

logger = logging.getLogger(__name__)


class TransitPeriodKeys:
    """The period-key methods of :class:`~crypto.providers.transit.TransitKeyProvider`.

    The host provides ``name``, the hvac ``_client``, the ``_mount`` point, the
    KEK's key name ``_key``, ``_period_id_pattern``, ``_calls()`` (Transit
    failures as KeyProviderError) and ``_read_key()``.
    """

    name: str
    _client: hvac.Client
    _mount: str
    _key: str
    _period_id_pattern: re.Pattern[str]
    _calls: Callable[[], AbstractContextManager[None]]
    _read_key: Callable[[str], dict[str, Any]]

    def period_kek_id(self, period: str, *, create: bool = True) -> str | None:
        """The latest version of period key ``period`` (its Transit key made if ``create``)."""
        name = self._period_name(check_period(period))
        info = self._read_key_if_any(name)
        if info is None and not create:
            return None
        if info is None:
            with self._calls():
                self._client.secrets.transit.create_key(
                    name, key_type="aes256-gcm96", mount_point=self._mount
                )
            info = self._read_key(name)
        return self._period_id(period, int(info["latest_version"]))

    def rotate_period(self, period: str) -> str:
        """The next version of period key ``period`` (the key itself made if missing)."""
        name = self._period_name(check_period(period))
        if self._read_key_if_any(name) is None:
            kek_id = str(self.period_kek_id(period))
        else:
            with self._calls():
                response = self._client.secrets.transit.rotate_key(name, mount_point=self._mount)
            latest = rotated_version(response) if response else self._latest(name)
            kek_id = self._period_id(period, latest)
        logger.info("transit key provider made %s", kek_id)
        return kek_id

    def seal(self, kek_id: str, key_id: str, wrapped: bytes) -> bytes:
        """Seal wrapped DEK ``key_id`` with a Transit encrypt at the version ``kek_id`` names."""
        name, version = self._parse_period_id(kek_id)
        with self._calls():
            response = self._client.secrets.transit.encrypt_data(
                name,
                plaintext=b64(wrapped),
                associated_data=b64(self._seal_aad(kek_id, key_id)),
                key_version=version,
                mount_point=self._mount,
            )
        refuse_ignored_parameters(response)
        ciphertext = str(response["data"]["ciphertext"])
        if ciphertext_version(ciphertext) != version:
            raise KeyProviderError("Transit sealed under another version than asked")
        return ciphertext.encode("ascii")

    def unseal(self, kek_id: str, key_id: str, sealed: bytes) -> bytes:
        """Open a seal with a Transit decrypt; KeyDestroyedError if the version is gone."""
        name, version = self._parse_period_id(kek_id)
        ciphertext = checked_ciphertext(sealed)
        if ciphertext_version(ciphertext) != version:
            raise KeyProviderError("the KEK id does not match the sealed key")
        with self._calls():
            try:
                response = self._client.secrets.transit.decrypt_data(
                    name,
                    ciphertext=ciphertext,
                    associated_data=b64(self._seal_aad(kek_id, key_id)),
                    mount_point=self._mount,
                )
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath) as exc:
                self._explain_period_refusal(name, version)
                raise KeyProviderError("sealed key failed authentication") from exc
        try:
            return base64.b64decode(response["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyProviderError("Transit returned no usable plaintext") from exc

    def retire_period(self, period: str, *, keep: str | None) -> None:
        """Trim period key ``period`` below ``keep``, or delete it (``keep`` None); idempotent."""
        name = self._period_name(check_period(period))
        if self._read_key_if_any(name) is None:
            return
        if keep is None:
            with self._calls():
                self._client.adapter.post(
                    f"/v1/{self._mount}/keys/{name}/config", json={"deletion_allowed": True}
                )
                self._client.secrets.transit.delete_key(name, mount_point=self._mount)
        else:
            kept_name, version = self._parse_period_id(keep)
            if kept_name != name:
                raise KeyProviderError("the KEK id does not name a generation of this period")
            self._trim_key_below(name, version)
        logger.info("transit key provider retired period %s keeping %s", period, keep or "none")

    def period_of(self, kek_id: str) -> str | None:
        """The period of one of this deployment's period-key ids; None for any other id."""
        match = self._period_id_pattern.fullmatch(kek_id)
        return match.group("period") if match else None

    def _trim_key_below(self, name: str, version: int) -> None:
        """Make ``version`` the oldest version of Transit key ``name`` still held."""
        if self._read_key(name)["min_available_version"] >= version:
            return
        with self._calls():
            self._client.adapter.post(
                f"/v1/{self._mount}/keys/{name}/config",
                json={"min_decryption_version": version, "min_encryption_version": version},
            )
            self._client.secrets.transit.trim_key(
                name, min_version=version, mount_point=self._mount
            )

    def _explain_period_refusal(self, name: str, version: int) -> None:
        info = self._read_key_if_any(name)
        if info is None or version < max(int(info["min_available_version"]), 1):
            raise KeyDestroyedError("the period key that sealed this key was destroyed")
        if version < int(info["min_decryption_version"]):
            raise KeyDestroyedError("the period key that sealed this key was destroyed")

    def _read_key_if_any(self, name: str) -> dict[str, Any] | None:
        try:
            with self._calls():
                return dict(
                    self._client.secrets.transit.read_key(name, mount_point=self._mount)["data"]
                )
        except KeyProviderError as exc:
            if isinstance(exc.__cause__, hvac.exceptions.InvalidPath):
                return None
            raise

    def _latest(self, name: str) -> int:
        return int(self._read_key(name)["latest_version"])

    def _parse_period_id(self, kek_id: str) -> tuple[str, int]:
        match = self._period_id_pattern.fullmatch(kek_id)
        if match is None:
            raise KeyProviderError("the KEK id does not name a period key of this deployment")
        return self._period_name(match.group("period")), int(match.group("version"))

    def _period_name(self, period: str) -> str:
        return f"{self._key}-period-{period}"

    def _period_id(self, period: str, version: int) -> str:
        return f"transit:{self._period_name(period)}:v{version}"

    def _seal_aad(self, kek_id: str, key_id: str) -> bytes:
        return seal_associated_data(provider=self.name, kek_id=kek_id, key_id=key_id)
