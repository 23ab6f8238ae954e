"""Rebuilding a counter Redis lost, exactly: it adds the charges still waiting in the org's usage
stream (not those the drain stored already), starts again when a charge is settled while it
runs, and keeps the reservations that gateways put back after the loss."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluicegate.core.clock import ManualClock, SystemClock
from sluicegate.core.ids import new_id
from sluicegate.guard.counters import (
    Blocked,
    BudgetCounter,
    CreditCounter,
    PendingCharge,
    Plan,
    Reserved,
    Seed,
    SpendScope,
)
from sluicegate.guard.enforcer import CounterLoader, Guard
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.metering.stream import UsageStreams, encode_event
from sluicegate.metering.writer import store_usage
from sluicegate.runtime import Runtime, connect_redis
from tests.factories import Tenant, make_tenant
from tests.faults.servers import RedisServer
from tests.guard.stores import Org, Seeds
from tests.metering.test_drain import events
from tests.metering.test_drain import pg_runtime as pg_runtime  # the fixture


def usage(tenant: Tenant, cost: int, at: datetime) -> dict[str, Any]:
    """A usage event of the tenant's key at `at`, costing `cost`."""
    [event] = events(tenant, 1)
    return {
        **event,
        "request_id": f"req_rebuild_{secrets.token_hex(6)}",
        "created_at": at,
        "cost_nusd": cost,
    }


def key_budget(tenant: Tenant, start: datetime, limit: int) -> BudgetCounter:
    return BudgetCounter(
        key=f"{{{tenant.org_id}}}:b:bud_test:-:{int(start.timestamp() * 1000)}",
        budget_id="bud_test",
        limit=limit,
        hard=True,
        expire_at_ms=0,
        spend=SpendScope(tenant.org_id, "key", tenant.key_id, start, start + timedelta(days=1)),
    )


async def test_a_rebuild_counts_the_stream_and_the_database_once_each(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    at = day + timedelta(minutes=1)
    drained = [usage(tenant, 1_000, at) for _ in range(2)]  # stored, then deleted from the stream
    stored = [usage(tenant, 20_000, at) for _ in range(3)]  # stored, not yet deleted
    waiting = [usage(tenant, 300_000, at) for _ in range(4)]  # not stored yet
    other_key = {**usage(tenant, 7, at), "key_id": "key_someone_else"}
    yesterday = usage(tenant, 5, day - timedelta(minutes=1))
    async with runtime.sessions() as session, session.begin():
        await store_usage(session, drained + stored)
    streams = UsageStreams(runtime.redis, runtime.settings.redis_prefix)
    for event in [*stored, *waiting, other_key, yesterday]:
        await streams.append(tenant.org_id, encode_event(event))

    store = runtime.counters
    budget = key_budget(tenant, day, 10**9)
    credit = CreditCounter(f"{{{tenant.org_id}}}:credit", tenant.org_id)
    [spent, balance] = await store.read([budget, credit], CounterLoader(runtime.sessions))

    assert spent.used == 2 * 1_000 + 3 * 20_000 + 4 * 300_000
    # The credit pays for every request of the org, whichever key or day.
    assert balance.used == -(2 * 1_000 + 3 * 20_000 + 4 * 300_000 + 7 + 5)


async def test_a_charge_settled_while_a_counter_is_rebuilt_makes_it_start_again(
    redis_url: str, redis_prefix: str
) -> None:
    clock = ManualClock(datetime.now(UTC))
    prefix = f"{redis_prefix}:again{secrets.token_hex(4)}"
    store = RedisGuardStore(connect_redis(redis_url, 8), prefix, clock)
    org = Org()
    budget = org.budget(1000)
    # A request reserved on the counter; then the counter is lost (the reservation too).
    early = await store.reserve(org.plan(100, budget), Seeds({budget.key: 0}))
    assert isinstance(early, Reserved)
    await store._client.delete(f"{prefix}:{budget.key}")
    calls: list[int] = []

    async def loader(
        counters: Sequence[BudgetCounter | CreditCounter], pending: Sequence[PendingCharge]
    ) -> list[Seed]:
        calls.append(len(calls))
        if len(calls) == 1:
            # While the database is being read, the early request settles (70 spent): it is
            # not in what this read returns.
            await store.settle(early, 70, 0, encode_event({"not": "read"}))
            return [0]
        return [70]

    late = await store.reserve(org.plan(930, budget), loader)
    assert len(calls) == 2, "the seed made before the charge was used"
    assert isinstance(late, Reserved)
    assert isinstance(await store.reserve(org.plan(1, budget), Seeds()), Blocked)
    value = (await store.read([budget], Seeds()))[0]
    assert (value.used, value.reserved) == (70, 930)
    await store._client.aclose()


async def test_reservations_lost_with_redis_are_put_back_before_a_rebuild_admits(
    own_redis: RedisServer,
) -> None:
    store = RedisGuardStore(connect_redis(own_redis.url, 8), "sg", SystemClock())
    other = RedisGuardStore(connect_redis(own_redis.url, 8), "sg", SystemClock())
    org = Org()
    budget = org.budget(1000)
    await store.heartbeat()
    await other.heartbeat()
    held = []
    for owner in (store, other, other):
        result = await owner.reserve(org.plan(300, budget), Seeds({budget.key: 0}))
        assert isinstance(result, Reserved)
        held.append(result)
    own_redis.flushall()
    await other.heartbeat()  # the other gateway notices and puts back its two
    # This one rebuilds the counter (spent 0 in the database): its own reservation is put back
    # first, and the other gateway's two are there; only 100 more fit.
    assert isinstance(await store.reserve(org.plan(101, budget), Seeds()), Blocked)
    assert isinstance(await store.reserve(org.plan(100, budget), Seeds()), Reserved)
    await other.settle(held[1], 250, 0)
    value = (await store.read([budget], Seeds()))[0]
    assert (value.used, value.reserved) == (250, 300 + 300 + 100)
    for client in (store._client, other._client):
        await client.aclose()


@pytest.mark.parametrize("stored_before_the_rebuild", [False, True])
async def test_a_charge_whose_event_went_to_the_database_reaches_a_rebuilt_counter_once(
    pg_runtime: Runtime, stored_before_the_rebuild: bool
) -> None:
    """A request settled while Redis could not be reached: its event goes to the database
    through the buffered writer, its counters are told later. Redis loses the counter meanwhile
    and it is rebuilt from the database, either before the event is stored there (adding the
    cost then would be right, skipping it wrong) or after (the other way round). Either way the
    counter ends up holding the cost exactly once."""
    runtime = pg_runtime
    tenant = await make_tenant(runtime)
    now = runtime.clock.now()
    budget = key_budget(tenant, now.replace(hour=0, minute=0, second=0, microsecond=0), 10**9)
    credit = CreditCounter(f"{{{tenant.org_id}}}:credit", tenant.org_id)
    guard = Guard(
        runtime.counters,
        runtime.sessions,
        runtime.clock,
        fail_open=False,
        reservation_ttl_seconds=60,
    )

    def plan(amount: int) -> Plan:
        return Plan(tenant.org_id, new_id("req"), amount, 0, (budget,), credit)

    first = await guard.reserve(plan(5_000))
    assert isinstance(first, Reserved)
    event = {**usage(tenant, 4_000, now), "request_id": first.plan.request_id}
    # The guard goes on with the counters once the writer says the event is stored; here the
    # test says so, after the rebuild either way (the settle's own retries may wait as long).
    reported = asyncio.Event()
    guard.settle_soon(first, 4_000, 0, reported.wait)

    async def store_the_event() -> None:
        async with runtime.sessions() as session, session.begin():
            await store_usage(session, [event])

    if stored_before_the_rebuild:
        await store_the_event()
    await runtime.counters.forget([budget.key])  # lost with Redis's data
    second = await guard.reserve(plan(1))  # rebuilds the counter from the database
    assert isinstance(second, Reserved)
    await guard.store.settle(second, 0, 0)
    if not stored_before_the_rebuild:
        await store_the_event()
    reported.set()
    await guard.drain()

    [value] = await runtime.counters.read([budget], CounterLoader(runtime.sessions))
    assert (value.used, value.reserved) == (4_000, 0)
