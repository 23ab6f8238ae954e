"""Alembic environment: runs on a connection handed over by sluicegate, or on the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from sluicegate.core.db import make_engine
from sluicegate.tables import metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_configure_and_run)
    finally:
        await engine.dispose()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    # Plain `alembic` CLI use by developers: the URL comes from the same settings as the gateway.
    from sluicegate.settings import load_settings

    asyncio.run(_run_with_own_engine(load_settings().resolved_database_url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `sluicegate migrate`")
_run()
