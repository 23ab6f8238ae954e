"""The condition alerts: low credit, guardrail blocks over a window, spend anomalies. Each fires
once per episode (until the next top-up; per window; per day) however often it is evaluated."""

from __future__ import annotations

from datetime import time, timedelta
from typing import Any

import httpx

from sluicegate.alerts.evaluator import AlertEvaluator
from sluicegate.core.clock import ManualClock
from sluicegate.core.money import usd_to_nanos
from sluicegate.credits.service import top_up
from sluicegate.metering.writer import store_usage
from sluicegate.runtime import Runtime
from tests.alerts.test_outbox import alerts_of, channel, deliveries_of, rule
from tests.analytics.test_feed import Key, make_world, usage
from tests.analytics.test_insights import SPIKE_DAY, ZONE, history, local
from tests.factories import Tenant, make_tenant


async def test_low_credit_fires_once_until_the_next_top_up(runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    clock = ManualClock(runtime.clock.now())
    evaluator = AlertEvaluator(runtime.sessions, clock)
    low, lower = await channel(runtime, tenant.org_id), await channel(runtime, tenant.org_id)
    await rule(runtime, tenant.org_id, "credit.low", [low], params={"below_usd": "5"})
    await rule(runtime, tenant.org_id, "credit.low", [lower], params={"below_usd": "0.5"})

    async def add(amount: str) -> None:
        async with runtime.unit_of_work() as session:
            await top_up(
                session,
                tenant.actor,
                tenant.org_id,
                runtime.counters,
                amount_nusd=usd_to_nanos(amount),
                note=None,
                now=clock.now(),
            )

    async def fired() -> int:
        await evaluator.evaluate()
        return len(await alerts_of(runtime, tenant.org_id, "credit.low"))

    await add("20")
    assert await fired() == 0
    async with runtime.unit_of_work() as session:
        await store_usage(session, [_spend(tenant, clock, "17")])
    assert await fired() == 1  # 3.00 < 5 (and not < 0.5)
    assert await fired() == 1  # still low: said already
    [alert] = await alerts_of(runtime, tenant.org_id, "credit.low")
    assert alert.details["balance_usd"].startswith("3.0000")
    assert [d.channel_id for d in await deliveries_of(runtime, alert.id)] == [low]
    await add("1")  # topped up, still under 5: announced again, once
    assert await fired() == 2
    assert await fired() == 2


def _spend(tenant: Tenant, clock: ManualClock, usd: str) -> dict[str, Any]:
    return usage(tenant.org_id, _key(tenant), clock.now(), cost=usd_to_nanos(usd))


def _key(tenant: Tenant) -> Key:
    return Key(tenant.key_id, tenant.group_id, tenant.user_id)


async def test_blocked_requests_over_a_window(runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    clock = ManualClock(runtime.clock.now())
    evaluator = AlertEvaluator(runtime.sessions, clock)
    target = await channel(runtime, tenant.org_id)
    await rule(
        runtime,
        tenant.org_id,
        "guardrail.blocked",
        [target],
        params={"count": 3, "window_minutes": 10},
        scope_group_id=tenant.group_id,
    )
    key = _key(tenant)
    blocked = [
        usage(
            tenant.org_id,
            key,
            clock.now() - timedelta(minutes=m),
            status=429,
            error_type="rate_limited",
            cost=0,
        )
        for m in (1, 2, 30)  # the one 30 minutes ago is outside the window
    ]
    async with runtime.unit_of_work() as session:
        await store_usage(session, blocked)

    async def fired() -> int:
        await evaluator.evaluate()
        return len(await alerts_of(runtime, tenant.org_id, "guardrail.blocked"))

    assert await fired() == 0  # 2 in the window
    async with runtime.unit_of_work() as session:
        await store_usage(
            session,
            [
                usage(
                    tenant.org_id,
                    key,
                    clock.now(),
                    status=402,
                    error_type="budget_exceeded",
                    cost=0,
                )
            ],
        )
    assert await fired() == 1
    assert await fired() == 1  # same window
    [alert] = await alerts_of(runtime, tenant.org_id, "guardrail.blocked")
    assert alert.details["blocked"] == 3 and alert.group_id == tenant.group_id


async def test_a_spend_anomaly_is_announced_once_a_day(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    world = await make_world(runtime, app_client, ZONE)
    await world.store(history(world))
    target = await channel(runtime, world.org_id)
    await rule(runtime, world.org_id, "anomaly.detected", [target], recipients={"key_owner": True})
    evaluator = AlertEvaluator(runtime.sessions, ManualClock(local(SPIKE_DAY, time(23))))
    await evaluator.evaluate()
    await evaluator.evaluate()
    found = await alerts_of(runtime, world.org_id, "anomaly.detected")
    assert len(found) == 3  # Mia as member, her key, and gpt-4o; once each
    assert sorted(a.details["dimension"] for a in found) == ["key", "member", "model"]
    by_key = next(a for a in found if a.details["dimension"] == "key")
    assert by_key.group_id == world.team and by_key.recipient_user_ids == [world.km.user_id]
    assert "8.1x the 14-day median" in by_key.text
