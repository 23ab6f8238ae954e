"""Alembic environment: runs on a connection handed over by sluicegate, or on the configured URL."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from alembic import context
from sqlalchemy import JSON, Connection

from sluicegate.core.db import UTCDateTime, make_engine
from sluicegate.migrate import include_name
from sluicegate.tables import metadata


def _render_item(kind: str, obj: Any, autogen: Any) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones, so migrations never import our code."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, JSON) and getattr(obj, "_variant_mapping", None):
        autogen.imports.add("from sqlalchemy.dialects import postgresql")
        return 'sa.JSON().with_variant(postgresql.JSONB(), "postgresql")'
    return False


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_item=_render_item,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
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
    # Plain `alembic` CLI use by developers: the URL (and the key a migration may need to seal
    # the audit chains) come from the same settings as the gateway.
    from sluicegate.audit.chain import audit_key
    from sluicegate.settings import load_settings

    settings = load_settings()
    if settings.secret_key is not None:
        context.config.attributes.setdefault("audit_key", audit_key(settings.secret))
    asyncio.run(_run_with_own_engine(settings.resolved_database_url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `sluicegate migrate`")
_run()
