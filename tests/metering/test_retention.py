"""Retention removes raw usage rows of months past the setting, whole months at a time (on
Postgres, their partitions), and never touches the rollups or the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from sluicegate.core.db import make_engine
from sluicegate.metering.retention import apply_retention
from sluicegate.metering.writer import store_usage
from sluicegate.migrate import upgrade
from sluicegate.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import make_tenant
from tests.metering.books import read_books
from tests.metering.test_drain import events

NOW = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
MONTHS = [datetime(2026, month, 20, tzinfo=UTC) for month in (1, 10, 11, 12)]


async def _migrated(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(params=["postgres", "embedded"])
async def own_runtime(
    request: pytest.FixtureRequest, postgres_database: Callable[[], str], tmp_path: Path
) -> AsyncIterator[Runtime]:
    """A database of this test alone: dropping a month's partition must not reach other tests."""
    if request.param == "postgres":
        url = await asyncio.to_thread(postgres_database)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"
    await _migrated(url)
    runtime = Runtime.build(make_settings(database_url=url))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


async def test_rows_of_months_past_retention_go_and_the_rollups_stay(own_runtime: Runtime) -> None:
    runtime = own_runtime
    tenant = await make_tenant(runtime)
    batch = [
        {**event, "created_at": month + timedelta(minutes=n)}
        for month in MONTHS
        for n, event in enumerate(events(tenant, 3))
    ]
    async with runtime.unit_of_work() as session:
        await store_usage(session, batch)
        before = await read_books(session, tenant.org_id)
    assert before.rows == 12

    async with runtime.unit_of_work() as session:
        assert await apply_retention(session, NOW, 0) == 0
        removed = await apply_retention(session, NOW, 1)
    # Postgres drops January's and October's partitions; SQLite deletes their six rows.
    assert removed == (6 if runtime.settings.is_sqlite else 2)

    async with runtime.sessions() as session:
        after = await read_books(session, tenant.org_id)
        remaining = (await session.execute(text("SELECT count(*) FROM usage_events"))).scalar()
    november = datetime(2026, 11, 1, tzinfo=UTC)
    kept = {event["request_id"] for event in batch if event["created_at"] >= november}
    assert after.request_ids == kept and remaining == 6
    assert (after.quarter_requests, after.daily_requests) == (12, 12)
    assert (after.quarter_cost_nusd, after.debit_nusd) == (before.cost_nusd, -before.cost_nusd)
