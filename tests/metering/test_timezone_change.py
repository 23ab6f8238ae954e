"""An org's daily rollups are days in its timezone: changing the timezone rebuilds them from the
15-minute rollups in the same transaction, so the days move and every sum stays whole."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from sluicegate.metering.models import ORG_DIMENSIONS, UsageDailyRollup, UsageOrgDailyRollup
from sluicegate.metering.writer import store_usage
from sluicegate.orgs.service import update_organization
from sluicegate.runtime import Runtime
from tests.factories import make_tenant
from tests.metering.books import read_books
from tests.metering.test_drain import events


async def daily_requests(runtime: Runtime, org_id: str) -> Counter[tuple[str, date]]:
    """Requests per (zone, day) of the org's daily rollups; each dimension of its org-wide daily
    rollups must count the same."""
    async with runtime.sessions() as session:
        rows = (
            await session.execute(
                select(
                    UsageDailyRollup.zone, UsageDailyRollup.day, UsageDailyRollup.requests
                ).where(UsageDailyRollup.org_id == org_id)
            )
        ).all()
        org_wide = (
            await session.execute(
                select(
                    UsageOrgDailyRollup.dimension,
                    UsageOrgDailyRollup.zone,
                    UsageOrgDailyRollup.day,
                    UsageOrgDailyRollup.requests,
                ).where(UsageOrgDailyRollup.org_id == org_id)
            )
        ).all()
    counts: Counter[tuple[str, date]] = Counter()
    for zone, day, requests in rows:
        counts[(zone, day)] += requests
    per_dimension: dict[str, Counter[tuple[str, date]]] = {d: Counter() for d in ORG_DIMENSIONS}
    for dimension, zone, day, requests in org_wide:
        per_dimension[dimension][(zone, day)] += requests
    assert all(each == counts for each in per_dimension.values()), per_dimension
    return counts


def expected_days(created: list[datetime], zone: str) -> Counter[tuple[str, date]]:
    return Counter((zone, instant.astimezone(ZoneInfo(zone)).date()) for instant in created)


async def test_a_timezone_change_moves_the_daily_rollups_to_days_in_the_new_zone(
    runtime: Runtime,
) -> None:
    tenant = await make_tenant(runtime)  # UTC
    batch = events(tenant, 40)  # every 7 minutes from 22:50 UTC: across midnight in most zones
    batch += [
        {**event, "request_id": event["request_id"] + "k", "created_at": instant}
        for event, instant in zip(
            batch,
            # Kathmandu's local midnight (18:15 UTC) and the quarter hours beside it.
            [
                datetime(2026, 3, 28, 18, 0, tzinfo=UTC) + timedelta(minutes=15 * n)
                for n in range(3)
            ],
            strict=False,
        )
    ]
    async with runtime.unit_of_work() as session:
        await store_usage(session, batch)
    created = [event["created_at"] for event in batch]
    assert await daily_requests(runtime, tenant.org_id) == expected_days(created, "UTC")

    for zone in ("Asia/Kathmandu", "America/Los_Angeles", "Asia/Kolkata"):
        async with runtime.unit_of_work() as session:
            await update_organization(session, tenant.actor, tenant.org_id, {"timezone": zone})
        assert await daily_requests(runtime, tenant.org_id) == expected_days(created, zone)
        async with runtime.sessions() as session:
            books = await read_books(session, tenant.org_id)
        books.assert_consistent()

    # Usage stored after the change is summed into days in the new zone, next to the rebuilt ones.
    later = [
        {
            **event,
            "request_id": event["request_id"] + "z",
            "created_at": event["created_at"] + timedelta(hours=5),
        }
        for event in batch[:10]
    ]
    async with runtime.unit_of_work() as session:
        await store_usage(session, later)
    created += [event["created_at"] for event in later]
    assert await daily_requests(runtime, tenant.org_id) == expected_days(created, "Asia/Kolkata")
