"""Key handles and the key-provider interface.

A :class:`DataKey` is a handle on a data-encryption key (DEK): it carries a
``key_id`` and can be given to :mod:`crypto.stream` and to a key provider, but
it exposes no key bytes, has no public constructor taking bytes, and refuses to
be pickled or copied into a Celery message.

What keeps the bytes inside the crypto package is convention, checked by a
test, not a capability: the stream and the providers read them with the
underscore-private :func:`_material`, which asks for no token, and any code in
the process could call it (or read the slot) just as it could read the
process's memory. A test refuses any import of it outside ``crypto`` (and the
tests). The module-private token guards construction only: a handle on given
bytes comes from :func:`_from_material` (after unwrapping), fresh ones from
:meth:`DataKey.generate`.

A :class:`KeyProvider` holds key-encryption keys (KEKs) and wraps or unwraps
DEKs; the KEK itself never leaves the provider (a file, an HSM, a Transit
server). Wrapped keys are plain data (:class:`WrappedKey`) safe to store in
the catalog. It also holds *period keys*, which seal wrapped DEKs a second
time so that destroying one generation defeats every copy of what it sealed,
old catalog backups included (the key hierarchy: ``docs/KEYS.md``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

DEK_BYTES = 32

_SECRET_ACCESS = object()


class DataKey:
    """A handle on a 256-bit data-encryption key, identified by ``key_id``."""

    __slots__ = ("_key", "key_id")

    def __init__(self, *, key_id: str, _material: bytes, _token: object) -> None:
        if _token is not _SECRET_ACCESS:
            raise TypeError("DataKey has no public constructor; use DataKey.generate()")
        if len(_material) != DEK_BYTES:
            raise ValueError("a data key is 32 bytes")
        self.key_id = key_id
        self._key = bytes(_material)

    @classmethod
    def generate(cls, key_id: str | None = None) -> DataKey:
        """A fresh random DEK with a random identifier unless one is given."""
        return cls(
            key_id=key_id or f"dek-{secrets.token_hex(16)}",
            _material=secrets.token_bytes(DEK_BYTES),
            _token=_SECRET_ACCESS,
        )

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("DataKey cannot be pickled; pass its key_id instead")

    def __copy__(self) -> NoReturn:
        raise TypeError("DataKey cannot be copied")

    def __deepcopy__(self, memo: object) -> NoReturn:
        raise TypeError("DataKey cannot be copied")


def _material(key: DataKey) -> bytes:
    """The raw DEK bytes, for the stream and the providers (no token: see the module docstring)."""
    return key._key


def _from_material(key_id: str, material: bytes) -> DataKey:
    """Rebuild a handle from unwrapped bytes. Private to the crypto package."""
    return DataKey(key_id=key_id, _material=material, _token=_SECRET_ACCESS)


@dataclass(frozen=True)
class WrappedKey:
    """A DEK wrapped under a KEK: safe to store, useless without the provider.

    ``kek_id`` names the provider's KEK *and version* that wrapped it, so
    unwrapping never has to try keys in turn. ``blob`` is provider-specific.
    """

    key_id: str
    kek_id: str
    blob: bytes


@runtime_checkable
class KeyProvider(Protocol):
    """Holds KEKs and wraps/unwraps DEKs. The KEK never leaves the provider.

    The DEK's ``key_id`` is bound to the wrapping as associated data, so a
    wrapped key cannot be swapped onto another key id.
    """

    name: str

    def current_kek_id(self) -> str:
        """The KEK (and version) that new wraps use."""
        ...

    def wrap(self, key: DataKey) -> WrappedKey:
        """Wrap ``key`` under the current KEK."""
        ...

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        """Unwrap under the KEK named in ``wrapped``; KeyProviderError if it fails."""
        ...

    def rotate(self) -> str:
        """Create a new KEK version, make it current, and return its id."""
        ...

    def mac_key(self, purpose: str) -> MacKey:
        """A keyed-HMAC handle for ``purpose`` (pseudonyms, audit checkpoints)."""
        ...

    def destroy_kek(self, kek_id: str) -> None:
        """Destroy an old KEK version: every DEK wrapped only under it is lost."""
        ...

    # Period keys (docs/KEYS.md): one KEK per calendar month ``YYYY-MM``, in
    # generations; a generation seals already wrapped DEKs a second time, and
    # destroying it makes every copy of what it sealed (catalog backups
    # included) useless.

    def period_kek_id(self, period: str, *, create: bool = True) -> str | None:
        """The current generation of period key ``period``.

        Created on first use if ``create``; None if every generation was
        destroyed (or, without ``create``, none was ever made).
        """
        ...

    def rotate_period(self, period: str) -> str:
        """Create the next generation of period key ``period``, make it current, return its id."""
        ...

    def seal(self, kek_id: str, key_id: str, wrapped: bytes) -> bytes:
        """Seal the wrapped form of DEK ``key_id`` under period-key generation ``kek_id``."""
        ...

    def unseal(self, kek_id: str, key_id: str, sealed: bytes) -> bytes:
        """Reverse :meth:`seal`; KeyDestroyedError if that generation was destroyed."""
        ...

    def retire_period(self, period: str, *, keep: str | None) -> None:
        """Destroy every generation of ``period`` but ``keep`` (all if None); idempotent."""
        ...

    def period_of(self, kek_id: str) -> str | None:
        """The period that period-key id ``kek_id`` belongs to; None for any other id."""
        ...

    def close(self) -> None:
        """Release sessions and connections."""
        ...


@runtime_checkable
class MacKey(Protocol):
    """An HMAC-SHA256 key handle held for one purpose; exposes no bytes."""

    key_id: str

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data``."""
        ...
