"""Key providers: where the key-encryption keys live.

The front door is :func:`build_key_provider`, which turns the ``keys``
settings section into one :class:`~crypto.keys.KeyProvider`:

* ``local``: versioned KEKs in a 0600 key file (the embedded default);
* ``pkcs11``: non-extractable KEKs inside an HSM (SoftHSM2 or hardware);
* ``transit``: KEKs in OpenBao / HashiCorp Vault Transit.

Each also offers ``destroy_kek(kek_id)`` (crypto-shredding of a KEK version)
and ``close()``. Provider modules are imported only when chosen, so a
deployment without an HSM or Transit does not load their client libraries.

Example::

    provider = build_key_provider(settings.keys)
    wrapped = provider.wrap(DataKey.generate())     # store wrapped in the catalog
    key = provider.unwrap(wrapped)                  # later, with the same provider
"""

from __future__ import annotations

from crypto.keys import KeyProvider
from vault.settings import KeySettings

__all__ = ["build_key_provider"]


def build_key_provider(settings: KeySettings, *, create: bool = True) -> KeyProvider:
    """The key provider named by ``settings.provider``, ready to use.

    Parameters
    ----------
    settings
        The ``keys`` section of the settings.
    create
        Whether the provider may make its first KEK (the ``local`` key file,
        the first ``pkcs11`` KEK under the label prefix, the ``transit`` key)
        when it finds none; false once the catalog holds keys wrapped under
        it, so a wrong path, label, prefix or key name is refused instead of
        starting a new key hierarchy.

    Returns
    -------
    KeyProvider
        A provider with at least one KEK version (created on first use).

    Raises
    ------
    KeyProviderError
        The provider cannot be reached, or refuses its key store, or finds
        no KEK and ``create`` is false.
    """
    if settings.provider == "pkcs11":
        from crypto.providers.pkcs11 import Pkcs11KeyProvider

        return Pkcs11KeyProvider.from_settings(settings.pkcs11, create=create)
    if settings.provider == "transit":
        from crypto.providers.transit import TransitKeyProvider

        return TransitKeyProvider.from_settings(settings.transit, create=create)
    from crypto.providers.local import LocalKeyProvider

    return LocalKeyProvider.from_settings(settings.local, create=create)
