"""Running the Alembic migrations (upgrade, downgrade, current revision) and finding their
scripts: inside the installed wheel, or at the repository root in a source checkout."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

# Two places: the wheel carries the scripts inside the package (pyproject.toml force-includes
# migrations/ as sluicegate/_migrations), so `pip install` then `sluicegate migrate` needs no
# source checkout; a source checkout or editable install imports src/sluicegate/ where it lies,
# and the scripts stay at the repository root beside alembic.ini, where developers write them.
_IN_WHEEL = Path(__file__).parent / "_migrations"
_IN_SOURCE_TREE = Path(__file__).parents[2] / "migrations"
SCRIPT_LOCATION = _IN_WHEEL if _IN_WHEEL.is_dir() else _IN_SOURCE_TREE
# An arbitrary constant: replicas starting together take turns instead of racing DDL.
_ADVISORY_LOCK_ID = 5_318_947_201


def alembic_config(connection: Connection | None = None, audit_key: bytes | None = None) -> Config:
    """`audit_key` (audit/chain.py `audit_key`) lets a migration seal existing audit chains."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if connection is not None:
        config.attributes["connection"] = connection
    if audit_key is not None:
        config.attributes["audit_key"] = audit_key
    return config


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, audit_key: bytes | None = None
) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_locked, command.upgrade, revision, audit_key)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_locked, command.downgrade, revision, None)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )


def _locked(
    connection: Connection, operation: object, revision: str, audit_key: bytes | None
) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
    operation(alembic_config(connection, audit_key), revision)  # type: ignore[operator]


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """What schema comparison (autogenerate, the models test) looks at: not the monthly usage
    partitions, which the writers create at run time (metering/partitions.py)."""
    return not (type_ == "table" and name is not None and name.startswith("usage_events_p"))
