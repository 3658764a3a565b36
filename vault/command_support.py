"""What the ``dicom-vault`` command groups share: their vault, their actor, refusals, dates.

A command opens the vault from the environment's settings (invalid ones are
named, one line each, with exit status 2), acts as ``cli``
in the access log, and turns a refusal into its reason on standard error and
exit status 2 (:func:`refusals_exit`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import typer

from vault.core import Vault, open_vault
from vault.errors import InvalidInput, VaultError
from vault.settings import InvalidSettings, Settings, load_settings

ACTOR = "cli"


def cli_settings() -> Settings:
    """The environment's settings; invalid ones are named on standard error (exit status 2)."""
    try:
        return load_settings()
    except InvalidSettings as exc:
        for problem in exc.problems:
            typer.echo(f"error: invalid configuration: {problem}", err=True)
        raise typer.Exit(code=2) from None


def cli_vault() -> Vault:
    """The vault the environment's settings describe."""
    return open_vault(cli_settings())


@contextmanager
def refusals_exit(*errors: type[Exception]) -> Iterator[None]:
    """Print a refusal (``errors``, by default any :class:`VaultError`) and exit with status 2."""
    caught: tuple[type[Exception], ...] = errors or (VaultError,)
    try:
        yield
    except caught as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def parse_date(value: str) -> datetime:
    """``YYYY-MM-DD`` (or an ISO date-time) as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput("dates are YYYY-MM-DD", reason="date") from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
