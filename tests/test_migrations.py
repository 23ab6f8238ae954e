"""Migrations round-trip on both databases, and the models agree with them exactly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from sluicegate.core.db import make_engine
from sluicegate.metering.partitions import PARTITION_PREFIX
from sluicegate.migrations import (
    SCRIPT_LOCATION,
    alembic_config,
    current_revision,
    downgrade,
    include_name,
    upgrade,
)
from sluicegate.tables import metadata

EXPECTED_TABLES = {
    "alert_channels",
    "alert_rules",
    "alerts",
    "alert_deliveries",
    "alert_delivery_attempts",
    "users",
    "admin_tokens",
    "organizations",
    "groups",
    "memberships",
    "role_bindings",
    "api_keys",
    "usage_events",
    "ledger_entries",
    "audit_events",
    "audit_heads",
    "invitations",
    "budgets",
    "policies",
    "policy_bindings",
    "usage_rollups",
    "usage_daily_rollups",
    "usage_org_daily_rollups",
}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database_url(
    request: pytest.FixtureRequest, postgres_database: Callable[[], str], tmp_path: Path
) -> str:
    if request.param == "postgres":
        return postgres_database()
    return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, metadata))


def _table_names(connection: Connection) -> set[str]:
    names = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return {name for name in names if not name.startswith(PARTITION_PREFIX)}


async def test_upgrade_downgrade_upgrade_and_models_match(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            assert await conn.run_sync(_table_names) == EXPECTED_TABLES

        await downgrade(engine, "base")
        assert await current_revision(engine) is None
        async with engine.connect() as conn:
            assert await conn.run_sync(_table_names) == set()

        await upgrade(engine)
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            differences = await conn.run_sync(_schema_differences)
        assert differences == [], f"models and migrations disagree: {differences}"
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
        await upgrade(engine)
        assert await current_revision(engine) is not None
    finally:
        await engine.dispose()


def test_migrations_ship_inside_the_package() -> None:
    assert (SCRIPT_LOCATION / "env.py").is_file()
    assert any(SCRIPT_LOCATION.joinpath("versions").glob("0001_*.py"))


async def test_upgrading_a_live_database_builds_the_rollups_from_its_usage_rows(
    empty_database_url: str,
) -> None:
    """0005 on a database that already holds usage (written before rollups existed): the rows
    move into the new table (monthly partitions on Postgres) and both rollups are summed from
    them, equal to what the writer itself would have built."""
    from sqlalchemy import text

    from sluicegate.audit.chain import audit_key
    from sluicegate.metering.writer import store_usage
    from sluicegate.orgs.service import update_organization
    from sluicegate.runtime import Runtime
    from tests.conftest import TEST_SECRET_KEY, make_settings
    from tests.factories import make_tenant
    from tests.metering.books import read_books
    from tests.metering.test_drain import events
    from tests.metering.test_timezone_change import daily_requests

    engine = make_engine(empty_database_url, pool_size=1)
    runtime = Runtime.build(make_settings(database_url=empty_database_url))
    try:
        await upgrade(engine)
        tenant = await make_tenant(runtime)
        async with runtime.unit_of_work() as session:
            await update_organization(
                session,
                tenant.actor,
                tenant.org_id,
                {"timezone": "Asia/Kathmandu"},
                store=runtime.counters,
            )
        async with runtime.unit_of_work() as session:
            await store_usage(session, events(tenant, 40))
        async with runtime.sessions() as session:
            written = await read_books(session, tenant.org_id)
        days = await daily_requests(runtime, tenant.org_id)

        await downgrade(engine, "0004")
        async with engine.connect() as conn:
            assert "usage_rollups" not in await conn.run_sync(_table_names)
            count = await conn.scalar(text("SELECT count(*) FROM usage_events"))
        assert count == 40

        # The org's audit events ask 0008 to seal their chain: it needs the secret key.
        await upgrade(engine, audit_key=audit_key(TEST_SECRET_KEY.encode()))
        await runtime.engine.dispose()  # its connections knew the old table
        async with runtime.sessions() as session:
            rebuilt = await read_books(session, tenant.org_id)
        assert rebuilt == written
        rebuilt.assert_consistent()
        assert await daily_requests(runtime, tenant.org_id) == days
    finally:
        await runtime.close()
        await engine.dispose()


async def test_0008_seals_existing_audit_chains_once_and_needs_the_secret_key(
    empty_database_url: str,
) -> None:
    """A chain written before keyed links (unkeyed, its head unsealed) is sealed by the upgrade
    and keeps verifying; new events link keyed after it. Without the key the upgrade stops."""
    from datetime import UTC, datetime

    from sluicegate.audit.chain import GENESIS_HASH, UNKEYED, audit_key, link_hash
    from sluicegate.audit.models import AuditEvent, AuditHead
    from sluicegate.audit.service import record, verify_chain
    from sluicegate.runtime import Runtime
    from tests.conftest import TEST_SECRET_KEY, make_settings

    engine = make_engine(empty_database_url, pool_size=1)
    runtime = Runtime.build(make_settings(database_url=empty_database_url))
    try:
        await upgrade(engine, "0007")
        previous, rows = GENESIS_HASH, []
        for seq in (1, 2, 3):
            fields = {
                "id": f"aud_legacy_{seq}",
                "org_id": "org_legacy",
                "seq": seq,
                "created_at": datetime(2026, 11, 1, 12, seq, tzinfo=UTC),
                "actor_user_id": None,
                "action": "group.create",
                "target_type": "group",
                "target_id": f"grp_{seq}",
                "group_id": None,
                "before": None,
                "after": {"name": f"g{seq}"},
                "ip": None,
                "user_agent": None,
                "request_id": None,
            }
            digest = link_hash(previous, fields, UNKEYED)
            rows.append({**fields, "prev_hash": previous, "hash": digest})
            previous = digest
        async with engine.begin() as conn:
            await conn.execute(AuditEvent.__table__.insert(), rows)
            await conn.execute(
                AuditHead.__table__.insert().values(org_id="org_legacy", seq=3, hash=previous)
            )

        with pytest.raises(RuntimeError, match="SLUICEGATE_SECRET_KEY"):
            await upgrade(engine)
        assert await current_revision(engine) == "0007"
        await upgrade(engine, audit_key=audit_key(TEST_SECRET_KEY.encode()))

        async with runtime.sessions() as session:
            legacy = await verify_chain(session, "org_legacy")
        assert legacy.intact and legacy.checked == 3
        async with runtime.unit_of_work() as session:
            await record(
                session,
                org_id="org_legacy",
                actor_user_id=None,
                action="group.update",
                target_type="group",
                target_id="grp_1",
            )
        async with runtime.sessions() as session:
            mixed = await verify_chain(session, "org_legacy")
        assert mixed.intact and mixed.checked == 4
    finally:
        await runtime.close()
        await engine.dispose()
