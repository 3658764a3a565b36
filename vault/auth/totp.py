"""TOTP second factor (RFC 6238): secrets, codes, enrolment QR codes, sealing.

Codes are checked at the clock's time with one 30-second step of tolerance on
either side, and a step once accepted is never accepted again (no replay).
Secrets are stored sealed (AES-256-GCM, the user id as associated data) under
a key derived from the key provider's MAC key for ``totp-seal``, so the
catalog alone does not reveal them.
"""

from __future__ import annotations

import os
from datetime import datetime

import pyotp
import qrcode
import qrcode.image.svg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.errors import IntegrityError
from crypto.keys import MacKey
from vault.mac_purposes import TOTP_SEAL

ISSUER = "dicom-vault"
SEAL_PURPOSE = TOTP_SEAL
_NONCE_BYTES = 12


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """``uri`` as a QR code, an inline SVG element made on the server."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=10)
    return image.to_string(encoding="unicode")


def accepted_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` is valid for at ``now``, or None.

    A step at or before ``last_step`` (already used) is refused.
    """
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None


class TotpSealer:
    """Seals and opens TOTP secrets for storage in the catalog."""

    def __init__(self, mac_key: MacKey) -> None:
        self._aead = AESGCM(mac_key.mac(b"dicom-vault totp secret sealing v1"))

    def seal(self, user_id: str, secret: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), user_id.encode())

    def open(self, user_id: str, sealed: bytes) -> str:
        """The secret sealed in ``sealed``.

        Raises:
            IntegrityError: sealed for another user, altered, or under another key.
        """
        nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, body, user_id.encode()).decode()
        except InvalidTag as exc:
            raise IntegrityError("a sealed TOTP secret failed authentication") from exc
