"""Alembic environment: runs migrations on the engine handed in by vault.catalog.db."""

from __future__ import annotations

from alembic import context

# Imported for their effect: each module registers its tables on Base.
import vault.catalog.accounts
import vault.catalog.breaches
import vault.catalog.commitments
import vault.catalog.deid
import vault.catalog.dsr
import vault.catalog.key_periods
import vault.catalog.retention
import vault.catalog.uploads  # noqa: F401
from vault.catalog.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
