"""The ``dicom-vault backup`` and ``dicom-vault restore`` commands.

``backup`` takes an encrypted catalog backup now (and deletes those past the
6-month rotation); ``backup list`` lists them; ``restore <backup id>``
restores one, refusing a catalog that holds data unless ``--force``. Each is
recorded in the access log as actor ``cli``; a refusal prints its reason and
exits with status 2. See :mod:`vault.backup`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from crypto.errors import CryptoError
from vault.backup import create_backup, list_backups, restore_backup
from vault.core import Vault, open_vault
from vault.errors import VaultError
from vault.settings import Settings

backup_app = typer.Typer(
    help="Encrypted catalog backups (6-month rotation).", invoke_without_command=True
)
ACTOR = "cli"


def _vault() -> Vault:
    return open_vault(Settings())


def _fail(exc: VaultError | CryptoError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code=2)


@backup_app.callback()
def backup(context: typer.Context) -> None:
    """Back the catalog up now (then delete backups past their rotation)."""
    if context.invoked_subcommand is not None:
        return
    try:
        info = create_backup(_vault(), actor=ACTOR)
    except (VaultError, CryptoError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"backup {info.backup_id} written ({info.rows} catalog rows)")


@backup_app.command("list")
def backup_list() -> None:
    """List the backups: id, time taken, catalog rows."""
    for info in list_backups(_vault()):
        typer.echo(f"{info.backup_id}  taken={info.created_at:%Y-%m-%d %H:%M}  rows={info.rows}")


def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup's id (see `backup list`).")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a catalog that holds data.")
    ] = False,
) -> None:
    """Restore a catalog backup; keys shredded since it was taken stay destroyed."""
    try:
        report = restore_backup(_vault(), backup_id, force=force, actor=ACTOR)
    except (VaultError, CryptoError) as exc:
        raise _fail(exc) from exc
    keys = report.keys
    typer.echo(
        f"restored {report.backup_id}: {report.rows} catalog rows; data keys refreshed"
        f" {keys.refreshed + keys.resealed}, shredded since the backup {keys.destroyed}"
    )
