"""The HSM key provider: KEKs inside a PKCS#11 token (SoftHSM2 or a real HSM).

KEKs are AES-256 secret keys generated inside the token, stored on it,
private, sensitive and non-extractable, labelled ``<prefix>-v1``,
``<prefix>-v2``, ...; the current one is the highest version present. Their
ids are ``pkcs11:<prefix>-vN``. The first is generated when the token holds
none, unless the catalog already holds keys wrapped under them (``create``
false): then a wrong token label or prefix is refused, not given new keys.

Wrapping encrypts the 32 DEK bytes inside the HSM with ``CKM_AES_GCM``
(random 96-bit nonce, associated data binding the DEK ``key_id`` and the
``kek_id``; blob layout in :mod:`._binding`). AES-GCM is used rather than
``CKM_AES_KEY_WRAP_PAD`` because key wrap has no associated data, so it could
not bind the key ids, and because the DEK is a byte string in the process,
not a token object that ``C_WrapKey`` could take. Random nonces limit one KEK
to about 2**32 wraps; rotate long before.

MAC keys are 256-bit generic-secret keys in the token, one per purpose
(``<prefix>-mac-<purpose>``), used with ``CKM_SHA256_HMAC``.

Period keys (``docs/KEYS.md``) are AES-256 keys in the token like the KEKs:
:mod:`._pkcs11_periods`.

The provider keeps one session. All PKCS#11 calls of the process are
serialised by one lock, because python-pkcs11 initialises the module without
OS locking. PKCS#11 login is shared by all sessions of a process, so one
logged-in session per process and token is kept open for the life of the
process (:mod:`._pkcs11_token`). After a fork the library is re-initialised
in the child before first use.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from crypto.errors import KeyDestroyedError, KeyProviderError
from crypto.keys import DataKey, WrappedKey, _from_material, _material
from crypto.providers import _pkcs11_token as token
from crypto.providers._binding import (
    NONCE_BYTES,
    associated_data,
    check_purpose,
    pack_blob,
    parse_version,
    unpack_blob,
)
from crypto.providers._pkcs11_periods import Pkcs11PeriodKeys, period_id_pattern
from vault.settings import Pkcs11KeySettings

logger = logging.getLogger(__name__)


class Pkcs11MacKey:
    """An HMAC-SHA256 key held in the token for one purpose."""

    __slots__ = ("_label", "_provider", "key_id")

    def __init__(self, provider: Pkcs11KeyProvider, label: str) -> None:
        self._provider = provider
        self._label = label
        self.key_id = f"pkcs11:{label}"

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data``, computed inside the HSM."""
        return self._provider._hmac(self._label, data)

    def __repr__(self) -> str:
        return f"Pkcs11MacKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a MAC key cannot be pickled; ask the provider for it by purpose")


class Pkcs11KeyProvider(Pkcs11PeriodKeys):
    """Key provider whose KEKs never leave a PKCS#11 token.

    Parameters
    ----------
    settings
        The ``keys.pkcs11`` section: module path, token label, user PIN and
        the label prefix of this deployment's keys.
    create
        Whether a first KEK may be generated when the token holds none under
        the prefix. Refuse it (``False``) once keys were wrapped under this
        deployment's KEKs: a wrong token or prefix would otherwise start a new
        key hierarchy (and new MAC keys) that no stored data needs.

    Raises
    ------
    KeyProviderError
        The module, the token or the login fails, or the token holds no KEK
        under the prefix and ``create`` is false.
    """

    name = "pkcs11"

    def __init__(self, settings: Pkcs11KeySettings, *, create: bool = True) -> None:
        self._settings = settings
        self._prefix = settings.key_label_prefix
        self._kek_id_pattern = re.compile(
            "pkcs11:" + re.escape(self._prefix) + r"-v(?P<version>[1-9][0-9]{0,8})"
        )
        self._period_id_pattern = period_id_pattern(self._prefix)
        self._session: pkcs11.Session | None = None
        self._pid = -1
        self._mac_handles: dict[str, pkcs11.SecretKey] = {}
        with self._session_in_use() as session:
            if not self._versions(session):
                self._create_first_kek(session, create=create)

    @classmethod
    def from_settings(
        cls, settings: Pkcs11KeySettings, *, create: bool = True
    ) -> Pkcs11KeyProvider:
        """Build the provider from the ``keys.pkcs11`` settings section."""
        return cls(settings, create=create)

    def __repr__(self) -> str:
        return f"Pkcs11KeyProvider(token={self._settings.token_label!r}, prefix={self._prefix!r})"

    def current_kek_id(self) -> str:
        """The KEK (and version) that new wraps use: the highest version present."""
        with self._session_in_use() as session:
            return self._kek_id(_current(self._versions(session)))

    def wrap(self, key: DataKey) -> WrappedKey:
        """Wrap ``key`` with AES-GCM inside the HSM under the current KEK."""
        nonce = os.urandom(NONCE_BYTES)
        with self._session_in_use() as session:
            versions = self._versions(session)
            current = _current(versions)
            kek_id = self._kek_id(current)
            aad = associated_data(provider=self.name, kek_id=kek_id, key_id=key.key_id)
            sealed = versions[current].encrypt(
                _material(key), mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        return WrappedKey(key_id=key.key_id, kek_id=kek_id, blob=pack_blob(nonce, sealed))

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        """Unwrap inside the HSM under the KEK named by ``wrapped.kek_id``.

        Raises
        ------
        KeyDestroyedError
            That KEK version was destroyed.
        KeyProviderError
            The KEK id is unknown, or the blob fails authentication.
        """
        version = parse_version(wrapped.kek_id, self._kek_id_pattern, self.name)
        nonce, sealed = unpack_blob(wrapped.blob)
        aad = associated_data(provider=self.name, kek_id=wrapped.kek_id, key_id=wrapped.key_id)
        with self._session_in_use() as session:
            kek = self._kek(session, version)
            try:
                material = kek.decrypt(
                    sealed, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
            except pkcs11.PKCS11Error as exc:
                raise KeyProviderError("wrapped key failed authentication") from exc
        return _from_material(wrapped.key_id, bytes(material))

    def rotate(self) -> str:
        """Generate the next KEK version in the token and return its id.

        A version another process creates at the same moment is not taken
        over: this call moves on to the next free version number.
        """
        with self._session_in_use() as session:
            version = _current(self._versions(session)) + 1
            while token.create_new(session, self._label(version), token.kek_template()) is None:
                version += 1
        kek_id = self._kek_id(version)
        logger.info("pkcs11 key provider rotated to %s", kek_id)
        return kek_id

    def destroy_kek(self, kek_id: str) -> None:
        """Destroy a non-current KEK version in the token; idempotent.

        Raises
        ------
        KeyProviderError
            ``kek_id`` is the current KEK (rotate first) or a version the
            token never had.
        """
        version = parse_version(kek_id, self._kek_id_pattern, self.name)
        with self._session_in_use() as session:
            versions = self._versions(session)
            current = _current(versions)
            if version == current:
                raise KeyProviderError("the current KEK cannot be destroyed; rotate first")
            if version > current:
                raise KeyProviderError("the KEK id names a version the token does not have")
            if version in versions:
                versions[version].destroy()
        logger.info("pkcs11 key provider destroyed %s", kek_id)

    def mac_key(self, purpose: str) -> Pkcs11MacKey:
        """The HMAC-SHA256 key for ``purpose``, generated in the token on first use."""
        label = f"{self._prefix}-mac-{check_purpose(purpose)}"
        with self._session_in_use() as session:
            self._mac_handle(session, label)
        return Pkcs11MacKey(self, label)

    def kek_attributes(self, kek_id: str, attributes: list[Attribute]) -> dict[Attribute, object]:
        """Read non-secret attributes of a KEK (e.g. CKA_EXTRACTABLE) for audits and tests."""
        version = parse_version(kek_id, self._kek_id_pattern, self.name)
        with self._session_in_use() as session:
            kek = self._kek(session, version)
            return {attribute: kek[attribute] for attribute in attributes}

    def close(self) -> None:
        """Close this provider's session (the process's login stays open)."""
        with token.library_lock():
            if self._session is not None and self._pid == os.getpid():
                try:
                    self._session.close()
                except pkcs11.PKCS11Error:
                    logger.warning("pkcs11 session did not close cleanly")
            self._session = None
            self._mac_handles.clear()

    def _hmac(self, label: str, data: bytes) -> bytes:
        with self._session_in_use() as session:
            key = self._mac_handle(session, label)
            return bytes(key.sign(data, mechanism=Mechanism.SHA256_HMAC))

    def _mac_handle(self, session: pkcs11.Session, label: str) -> pkcs11.SecretKey:
        handle = self._mac_handles.get(label)
        if handle is None:
            handle = self._find_one(session, label, KeyType.GENERIC_SECRET)
            if handle is None:
                handle = token.get_or_create(session, label, token.mac_template())
            self._mac_handles[label] = handle
        return handle

    def _create_first_kek(self, session: pkcs11.Session, *, create: bool) -> None:
        if not create:
            raise KeyProviderError(
                f"the HSM token {self._settings.token_label!r} holds no KEK with the label "
                f"prefix {self._prefix!r}, yet keys were wrapped under this deployment's KEKs: "
                "check keys.pkcs11.token_label and keys.pkcs11.key_label_prefix "
                "(new keys could not open them)"
            )
        token.get_or_create(session, self._label(1), token.kek_template())
        logger.info("pkcs11 key provider created %s", self._kek_id(1))

    def _kek(self, session: pkcs11.Session, version: int) -> pkcs11.SecretKey:
        kek = self._find_one(session, self._label(version), KeyType.AES)
        if kek is not None:
            return kek
        if version <= _current(self._versions(session)):
            raise KeyDestroyedError("the KEK that wrapped this key was destroyed")
        raise KeyProviderError("the KEK id names a version the token does not have")

    def _versions(self, session: pkcs11.Session) -> dict[int, pkcs11.SecretKey]:
        """This deployment's KEKs in the token, by version.

        A version whose label two keys carry is being created by two
        processes at once (see :func:`._pkcs11_token.create_new`) and is left
        out until one of them has withdrawn its key.
        """
        pattern = re.compile(re.escape(self._prefix) + r"-v(?P<version>[1-9][0-9]{0,8})")
        found: dict[int, list[pkcs11.SecretKey]] = {}
        for key in token.secret_keys(session, KeyType.AES):
            match = pattern.fullmatch(key[Attribute.LABEL])
            if match is not None:
                found.setdefault(int(match.group("version")), []).append(key)
        settled = {version: keys[0] for version, keys in found.items() if len(keys) == 1}
        if found and not settled:
            raise KeyProviderError("every KEK label in the token is contested; retry")
        return settled

    def _find_one(
        self, session: pkcs11.Session, label: str, key_type: KeyType
    ) -> pkcs11.SecretKey | None:
        try:
            return session.get_key(ObjectClass.SECRET_KEY, key_type, label=label)
        except pkcs11.NoSuchKey:
            return None
        except pkcs11.MultipleObjectsReturned as exc:
            raise KeyProviderError("two keys in the token carry one label") from exc

    def _label(self, version: int) -> str:
        return f"{self._prefix}-v{version}"

    def _kek_id(self, version: int) -> str:
        return f"pkcs11:{self._prefix}-v{version}"

    @contextmanager
    def _session_in_use(self) -> Iterator[pkcs11.Session]:
        """This provider's session, under the process's PKCS#11 lock; reopened after a fork."""
        with token.library_lock():
            if self._session is None or self._pid != os.getpid():
                self._mac_handles.clear()
                self._session = token.open_session(self._settings)
                self._pid = os.getpid()
            try:
                yield self._session
            except pkcs11.PKCS11Error as exc:
                reason = type(exc).__name__
                raise KeyProviderError(f"the HSM refused the operation ({reason})") from exc


def _current(versions: dict[int, pkcs11.SecretKey]) -> int:
    """The highest KEK version present: the one new wraps use."""
    if not versions:
        raise KeyProviderError("the token holds no KEK of this deployment")
    return max(versions)
