"""The ``dicom-vault backup`` and ``dicom-vault restore`` commands.

``backup`` takes an encrypted catalog backup now (and deletes those past the
6-month rotation); ``backup list`` lists them; ``restore <backup id>``
restores one, refusing a catalog that holds data unless ``--force``. Each is
recorded in the access log as actor ``cli:<account>``; a refusal prints its reason and
exits with status 2. See :mod:`vault.backup`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from crypto.errors import CryptoError
from vault.backup import create_backup, list_backups, restore_backup
from vault.command_support import cli_actor, cli_vault, refusals_exit
from vault.errors import VaultError

backup_app = typer.Typer(
    help="Encrypted catalog backups (6-month rotation).", invoke_without_command=True
)


@backup_app.callback()
def backup(context: typer.Context) -> None:
    """Back the catalog up now (then delete backups past their rotation)."""
    if context.invoked_subcommand is not None:
        return
    with refusals_exit(VaultError, CryptoError):
        info = create_backup(cli_vault(), actor=cli_actor())
    typer.echo(f"backup {info.backup_id} written ({info.rows} catalog rows)")


@backup_app.command("list")
def backup_list() -> None:
    """List the backups: id, time taken, catalog rows."""
    for info in list_backups(cli_vault()):
        typer.echo(f"{info.backup_id}  taken={info.created_at:%Y-%m-%d %H:%M}  rows={info.rows}")


def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup's id (see `backup list`).")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a catalog that holds data.")
    ] = False,
) -> None:
    """Restore a catalog backup; keys shredded since it was taken stay destroyed."""
    with refusals_exit(VaultError, CryptoError):
        report = restore_backup(cli_vault(), backup_id, force=force, actor=cli_actor())
    keys = report.keys
    typer.echo(
        f"restored {report.backup_id}: {report.rows} catalog rows; data keys refreshed"
        f" {keys.refreshed + keys.resealed}, shredded since the backup {keys.destroyed}"
    )
