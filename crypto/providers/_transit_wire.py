"""What the Transit provider reads and writes on the wire: ciphertexts, responses.

Shared by the KEK calls (:mod:`.transit`) and the period-key calls
(:mod:`._transit_periods`).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from crypto.errors import KeyProviderError

CIPHERTEXT = re.compile(r"vault:v(?P<version>[1-9][0-9]{0,8}):[A-Za-z0-9+/=]+")
MAX_BLOB_BYTES = 1024


def rotated_version(response: object) -> int:
    """The new version a rotate response names."""
    try:
        return int(response["data"]["latest_version"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyProviderError("Transit answered the rotation without a version") from exc


def refuse_ignored_parameters(response: dict[str, Any]) -> None:
    """Refuse a server that ignored ``associated_data`` (it would wrap without the binding)."""
    for warning in response.get("warnings") or ():
        if "associated_data" in str(warning):
            raise KeyProviderError("this Transit server ignores associated_data; refusing to wrap")


def checked_ciphertext(blob: bytes) -> str:
    """A stored blob as a Transit ciphertext string, if it looks like one."""
    if len(blob) > MAX_BLOB_BYTES:
        raise KeyProviderError("wrapped key is malformed")
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyProviderError("wrapped key is malformed") from exc
    if CIPHERTEXT.fullmatch(text) is None:
        raise KeyProviderError("wrapped key is malformed")
    return text


def ciphertext_version(ciphertext: str) -> int:
    """The key version a Transit ciphertext names."""
    match = CIPHERTEXT.fullmatch(ciphertext)
    if match is None:
        raise KeyProviderError("Transit returned a malformed ciphertext")
    return int(match.group("version"))


def b64(data: bytes) -> str:
    """Base64 text, as Transit takes it."""
    return base64.b64encode(data).decode("ascii")
