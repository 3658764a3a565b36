"""Access to a PKCS#11 token: library, login, key templates, safe key creation.

PKCS#11 login state belongs to the whole process, not to one session, and
closing a logged-in session logs every session out. So one logged-in session
per (module, token) is opened per process and kept for its lifetime; provider
sessions are opened without a PIN and inherit the login. After a fork, the
child re-initialises the library once before opening anything.

python-pkcs11 initialises the module with ``C_Initialize(NULL)``, which tells
it that calls will never overlap, so SoftHSM2 takes no locks of its own (two
threads generating keys at once crash it). Every call into the module in
this process therefore runs under the one lock :func:`library_lock` returns.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pkcs11
from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

from crypto.errors import KeyProviderError
from vault.settings import Pkcs11KeySettings

_CREATE_ATTEMPTS = 5
_library_lock = threading.RLock()
_initialised_in: dict[str, int] = {}
_login_sessions: dict[tuple[str, str, int], pkcs11.Session] = {}


@dataclass(frozen=True)
class KeyTemplate:
    """How to generate one kind of key in the token."""

    key_type: KeyType
    bits: int
    capabilities: MechanismFlag


def kek_template() -> KeyTemplate:
    """AES-256, encrypt/decrypt only: a KEK used with CKM_AES_GCM."""
    return KeyTemplate(KeyType.AES, 256, MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)


def mac_template() -> KeyTemplate:
    """256-bit generic secret, sign/verify only: a key for CKM_SHA256_HMAC."""
    return KeyTemplate(KeyType.GENERIC_SECRET, 256, MechanismFlag.SIGN | MechanismFlag.VERIFY)


@contextmanager
def library_lock() -> Iterator[None]:
    """Hold the lock every call into a PKCS#11 module in this process must hold."""
    with _library_lock:
        yield


def _fresh_lock_after_fork() -> None:
    global _library_lock
    _library_lock = threading.RLock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def open_session(settings: Pkcs11KeySettings) -> pkcs11.Session:
    """A read-write session on the configured token, logged in for this process.

    Raises
    ------
    KeyProviderError
        The module cannot be loaded, the token is absent, or login fails.
    """
    module = str(settings.module)
    try:
        with library_lock():
            library = _library(module)
            found = library.get_token(token_label=settings.token_label)
            _ensure_login(module, found, settings)
            return found.open(rw=True)
    except pkcs11.NoSuchToken as exc:
        raise KeyProviderError(
            f"the module sees no HSM token labelled {settings.token_label!r}: check"
            " keys.pkcs11.token_label (and SOFTHSM2_CONF in the service's environment for SoftHSM)"
        ) from exc
    except pkcs11.PKCS11Error as exc:
        raise KeyProviderError(f"cannot open the HSM token ({type(exc).__name__})") from exc
    except RuntimeError as exc:
        raise KeyProviderError("cannot load the PKCS#11 module") from exc


def secret_keys(session: pkcs11.Session, key_type: KeyType) -> Iterator[pkcs11.SecretKey]:
    """Every secret key of ``key_type`` visible to the session."""
    attributes = {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: key_type}
    yield from session.get_objects(attributes)  # type: ignore[misc]


def get_or_create(session: pkcs11.Session, label: str, template: KeyTemplate) -> pkcs11.SecretKey:
    """The one key labelled ``label``, generated if there is none.

    Raises
    ------
    KeyProviderError
        The label stayed contested after several attempts.
    """
    for _ in range(_CREATE_ATTEMPTS):
        existing = _with_label(session, label, template.key_type)
        if len(existing) == 1:
            return existing[0]
        if not existing and (key := create_new(session, label, template)) is not None:
            return key
        _back_off()
    raise KeyProviderError("another process keeps creating the same key; retry")


def create_new(
    session: pkcs11.Session, label: str, template: KeyTemplate
) -> pkcs11.SecretKey | None:
    """Generate a key labelled ``label``; None if the label is (or becomes) taken.

    Two processes may create the same label at once. A creator keeps its new
    key only if, right after creating it, it is the only key with that label;
    otherwise it destroys its own (still unused) key. So a key is used only
    once it is unique, and is never destroyed for this reason afterwards.
    """
    if _with_label(session, label, template.key_type):
        return None
    key = _generate(session, label, template)
    if len(_with_label(session, label, template.key_type)) == 1:
        return key
    key.destroy()
    return None


def _back_off() -> None:
    time.sleep(secrets.randbelow(50) / 1000)


def _generate(session: pkcs11.Session, label: str, template: KeyTemplate) -> pkcs11.SecretKey:
    return session.generate_key(
        template.key_type,
        template.bits,
        id=secrets.token_bytes(16),
        label=label,
        store=True,
        capabilities=template.capabilities,
        template={
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.MODIFIABLE: False,
        },
    )


def _with_label(session: pkcs11.Session, label: str, key_type: KeyType) -> list[pkcs11.SecretKey]:
    attributes = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: key_type,
        Attribute.LABEL: label,
    }
    return list(session.get_objects(attributes))  # type: ignore[arg-type]


def _library(module: str) -> pkcs11.lib:
    """The loaded module, re-initialised once in a process forked after loading it."""
    library = pkcs11.lib(module)
    pid = os.getpid()
    previous = _initialised_in.get(module)
    if previous is not None and previous != pid:
        library.reinitialize()
    _initialised_in[module] = pid
    return library


def _ensure_login(module: str, found: pkcs11.Token, settings: Pkcs11KeySettings) -> None:
    """Log the process in to the token once, keeping that session open."""
    key = (module, settings.token_label, os.getpid())
    if key in _login_sessions:
        return
    pin = settings.user_pin.get_secret_value()
    if not pin:
        raise KeyProviderError("no PKCS#11 user PIN is configured")
    _login_sessions[key] = found.open(rw=True, user_pin=pin)
