"""How a test session treats a service that is not there.

Outside CI a missing service skips the tests that need it, saying why.
Under ``CI=true`` it is a failure: CI must never pass by skipping.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_service(name: str, why: str) -> None:
    """Skip (or, under CI, fail) because service ``name`` is unavailable."""
    message = f"{name} unavailable: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)
