"""Accounts, logins and authorisation: the front door of :mod:`vault.auth`.

Passwords are argon2id, a TOTP second factor is required of everyone, sessions
and tokens are random secrets kept only as digests, and every authorisation
decision is made in :mod:`vault.auth.permissions`.
"""

from vault.auth.guard import LoginRequired, declared_permission, require
from vault.auth.login import Authenticator, Outcome
from vault.auth.permissions import (
    CaseAction,
    Permission,
    Principal,
    can_access_case,
    cases_within_reach,
)

__all__ = [
    "Authenticator",
    "CaseAction",
    "LoginRequired",
    "Outcome",
    "Permission",
    "Principal",
    "can_access_case",
    "cases_within_reach",
    "declared_permission",
    "require",
]
