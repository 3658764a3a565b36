"""The embedded key provider: versioned KEKs in a local key file.

KEKs ``kek-local-v1``, ``kek-local-v2``, ... are 256-bit keys kept in one
JSON file (mode 0600, directory 0700; format in :mod:`._keyfile`), created on
first use. A DEK is wrapped with AES-256-GCM under the current KEK, with a
random 96-bit nonce and associated data binding the DEK ``key_id`` and the
``kek_id`` (layout in :mod:`._binding`).

MAC keys are derived per purpose with HKDF-SHA256 from a dedicated MAC root
in the same file, never from a KEK, so rotating KEKs never changes a MAC.

Period keys (``docs/KEYS.md``) are kept in the same file: :mod:`._local_periods`.

Crypto-shredding with this provider is only as good as the key file's
handling: keep it out of the data backups, or back it up under its own
rotation, or a destroyed KEK survives in an old copy.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, WrappedKey, _from_material, _material
from crypto.providers import _keyfile
from crypto.providers._binding import (
    NONCE_BYTES,
    associated_data,
    check_purpose,
    pack_blob,
    parse_version,
    unpack_blob,
)
from crypto.providers._local_periods import LocalPeriodKeys
from vault.settings import LocalKeySettings

logger = logging.getLogger(__name__)

_KEK_ID = re.compile(r"kek-local-v(?P<version>[1-9][0-9]{0,8})")
_MAC_INFO = b"dicom-vault/mac/v1/"


class LocalMacKey:
    """An HMAC-SHA256 key derived for one purpose; its bytes never leave it."""

    __slots__ = ("_material", "key_id")

    def __init__(self, key_id: str, material: bytes) -> None:
        self.key_id = key_id
        self._material = material

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data``."""
        signer = hmac.HMAC(self._material, hashes.SHA256())
        signer.update(data)
        return signer.finalize()

    def __repr__(self) -> str:
        return f"LocalMacKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MAC key cannot be pickled; ask the provider for it by purpose")


class LocalKeyProvider(LocalPeriodKeys):
    """Key provider backed by a key file on the local disk.

    Parameters
    ----------
    path
        The key file. It and its directory are created on first use.
    create
        Whether a missing key file may be made. Refuse it (``False``) once
        keys were wrapped under the file: a new one would hide the real one
        (a volume not mounted) behind keys that no stored data needs.

    Raises
    ------
    KeyProviderError
        The key file is accessible by group or others, or malformed, or its
        directory is writable by others, or it is missing and ``create`` is false.
    """

    name = "local"

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._content: _keyfile.KeyFile | None = None
        self._signature: tuple[int, int, int] | None = None
        if not create and not self._path.exists():
            raise KeyProviderError(
                "the local key file is missing, and keys were wrapped under it: "
                "restore it (or mount its volume); a new one cannot open them"
            )
        _keyfile.ensure_private_directory(self._path.parent)
        self._create_if_missing()
        self._state()

    @classmethod
    def from_settings(cls, settings: LocalKeySettings, *, create: bool = True) -> LocalKeyProvider:
        """Build the provider from the ``keys.local`` settings section."""
        if settings.path is None:
            raise KeyProviderError("no local key file path is configured")
        return cls(settings.path, create=create)

    def __repr__(self) -> str:
        return f"LocalKeyProvider(path={str(self._path)!r})"

    def current_kek_id(self) -> str:
        """The KEK (and version) that new wraps use."""
        return _kek_id(self._state().current)

    def wrap(self, key: DataKey) -> WrappedKey:
        """Wrap ``key`` under the current KEK with AES-256-GCM."""
        content = self._state()
        kek_id = _kek_id(content.current)
        nonce = os.urandom(NONCE_BYTES)
        aad = associated_data(provider=self.name, kek_id=kek_id, key_id=key.key_id)
        sealed = AESGCM(content.keks[content.current]).encrypt(nonce, _material(key), aad)
        return WrappedKey(key_id=key.key_id, kek_id=kek_id, blob=pack_blob(nonce, sealed))

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        """Unwrap under the KEK named by ``wrapped.kek_id``.

        Raises
        ------
        KeyDestroyedError
            That KEK version was destroyed.
        KeyProviderError
            The KEK id is unknown, or the blob fails authentication (tampered,
            or moved onto another key id or KEK id).
        """
        version = parse_version(wrapped.kek_id, _KEK_ID, self.name)
        kek = self._kek(version)
        nonce, sealed = unpack_blob(wrapped.blob)
        aad = associated_data(provider=self.name, kek_id=wrapped.kek_id, key_id=wrapped.key_id)
        try:
            material = AESGCM(kek).decrypt(nonce, sealed, aad)
        except InvalidTag as exc:
            raise KeyProviderError("wrapped key failed authentication") from exc
        return _from_material(wrapped.key_id, material)

    def rotate(self) -> str:
        """Create KEK version N+1, make it current, and return its id."""
        with self._lock, _keyfile.writer_lock(self._path):
            content, _ = _keyfile.read_key_file(self._path)
            rotated = content.with_new_version()
            _keyfile.write_key_file(self._path, rotated)
            self._reload()
        kek_id = _kek_id(rotated.current)
        logger.info("local key provider rotated to %s", kek_id)
        return kek_id

    def destroy_kek(self, kek_id: str) -> None:
        """Destroy a non-current KEK version for good; idempotent.

        Raises
        ------
        KeyProviderError
            ``kek_id`` is the current KEK (rotate first) or not a version
            this file ever had.
        """
        version = parse_version(kek_id, _KEK_ID, self.name)
        with self._lock, _keyfile.writer_lock(self._path):
            content, _ = _keyfile.read_key_file(self._path)
            _check_destroyable(version, content.current)
            if version in content.keks:
                _keyfile.write_key_file(self._path, content.without_version(version))
            self._reload()
        logger.info("local key provider destroyed %s", kek_id)

    def mac_key(self, purpose: str) -> LocalMacKey:
        """The HMAC-SHA256 key for ``purpose``, derived from the MAC root."""
        check_purpose(purpose)
        info = _MAC_INFO + purpose.encode()
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
        return LocalMacKey(f"mac-local:{purpose}", derive.derive(self._state().mac_root))

    def close(self) -> None:
        """Nothing to release; present for symmetry with the other providers."""

    def _kek(self, version: int) -> bytes:
        content = self._state()
        if version in content.keks:
            return content.keks[version]
        if version <= content.current:
            raise KeyDestroyedError("the KEK that wrapped this key was destroyed")
        raise KeyProviderError("the KEK id names a version this key file does not have")

    def _create_if_missing(self) -> None:
        with _keyfile.writer_lock(self._path):
            if self._path.exists():
                return
            _keyfile.write_key_file(self._path, _keyfile.KeyFile.fresh())
        logger.info("local key provider created a key file with %s", _kek_id(1))

    def _state(self) -> _keyfile.KeyFile:
        """The key file content, re-read if another process replaced the file."""
        with self._lock:
            try:
                current_signature = _keyfile.signature(os.stat(self._path))
            except OSError as exc:
                raise KeyProviderError("the local key file is gone") from exc
            if self._content is None or current_signature != self._signature:
                self._reload()
            if self._content is None:
                raise KeyProviderError("the local key file could not be loaded")
            return self._content

    def _reload(self) -> None:
        self._content, self._signature = _keyfile.read_key_file(self._path)


def _kek_id(version: int) -> str:
    return f"kek-local-v{version}"


def _check_destroyable(version: int, current: int) -> None:
    if version == current:
        raise KeyProviderError("the current KEK cannot be destroyed; rotate first")
    if version > current:
        raise KeyProviderError("the KEK id names a version this key file does not have")
