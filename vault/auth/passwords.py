"""Password hashing with argon2id, and the password policy.

Hashes are argon2id in PHC string form (parameters and salt inside). A login
for an unknown account still runs one verification against a dummy hash, so
response times do not tell which accounts exist.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from vault.errors import InvalidInput
from vault.settings import AuthSettings

MAX_PASSWORD_CHARS = 1024


class Passwords:
    """Hashes and verifies passwords with the deployment's argon2id cost."""

    def __init__(self, settings: AuthSettings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.password_time_cost,
            memory_cost=settings.password_memory_kib,
            parallelism=1,
            type=Type.ID,
        )
        self._min_length = settings.password_min_length
        self._dummy = self._hasher.hash("dummy password for unknown accounts")

    def check_policy(self, password: str) -> None:
        """Refuse a password too short or too long to accept.

        Raises:
            InvalidInput: the password breaks the policy (message says which rule).
        """
        if len(password) < self._min_length:
            raise InvalidInput(f"the password must have at least {self._min_length} characters")
        if len(password) > MAX_PASSWORD_CHARS:
            raise InvalidInput("the password is too long")

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` after checking the policy."""
        self.check_policy(password)
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored`` (None: an account without one)."""
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(stored)
