"""Settle reports the budget thresholds a charge crossed, once per threshold and counter, on
both stores; with Redis the crossings travel with the usage event in the same atomic step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import (
    Crossing,
    GuardStore,
    Reserved,
    crossings_of,
    decode_crossings,
    encode_crossings,
)
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.metering.stream import stream_key
from tests.guard.stores import START, Org, Seeds, close_store, make_store

USD = 1_000_000_000


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[GuardStore]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    prefix = request.getfixturevalue("redis_prefix") if request.param == "redis" else ""
    active = make_store(request.param, ManualClock(START), redis_url, prefix)
    try:
        yield active
    finally:
        await close_store(active)


async def charge(store: GuardStore, org: Org, budget, cost: int) -> tuple[Crossing, ...]:
    held = await store.reserve(org.plan(cost, budget), Seeds())
    assert isinstance(held, Reserved), held
    crossed = await store.settle(held, cost, 0)
    assert crossed is not None
    return crossed


async def test_the_charge_that_reaches_a_threshold_reports_it(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100 * USD, hard=False, thresholds=(50, 90, 100))
    assert await charge(store, org, budget, 49 * USD) == ()
    crossed = await charge(store, org, budget, 1 * USD)  # exactly 50%: reached
    assert [(c.budget_id, c.percent, c.spent) for c in crossed] == [
        (budget.budget_id, 50, 50 * USD)
    ]
    assert await charge(store, org, budget, 39 * USD) == ()
    # One charge across two thresholds reports both.
    assert [c.percent for c in await charge(store, org, budget, 20 * USD)] == [90, 100]
    assert await charge(store, org, budget, 5 * USD) == ()


async def test_a_retried_settle_reports_nothing(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(10 * USD, thresholds=(80,))
    held = await store.reserve(org.plan(9 * USD, budget), Seeds())
    assert isinstance(held, Reserved)
    assert [c.percent for c in await store.settle(held, 9 * USD, 0) or ()] == [80]
    assert await store.settle(held, 9 * USD, 0) is None


async def test_amounts_beyond_double_precision_are_exact(store: GuardStore) -> None:
    """Lua numbers are doubles; a limit of 20 million USD (2e16 nano) is past 2^53."""
    org = Org()
    limit = 20_000_000 * USD
    budget = org.budget(limit, hard=False, thresholds=(90,))
    amount = limit * 90 // 100
    assert await charge(store, org, budget, amount - 1) == ()
    crossed = await charge(store, org, budget, 1)
    assert [(c.percent, c.spent) for c in crossed] == [(90, amount)]


async def test_concurrent_charges_cross_each_threshold_once(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100 * USD, hard=False, thresholds=(50, 80, 90, 95, 100))
    results = await asyncio.gather(*(charge(store, org, budget, 3 * USD) for _ in range(60)))
    percents = sorted(c.percent for crossed in results for c in crossed)
    assert percents == [50, 80, 90, 95, 100]


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    limit=st.integers(min_value=1, max_value=10**15),
    thresholds=st.lists(st.integers(1, 100), min_size=1, max_size=5, unique=True).map(
        lambda t: tuple(sorted(t))
    ),
    costs=st.lists(st.integers(min_value=0, max_value=10**14), min_size=1, max_size=12),
)
async def test_crossings_are_exactly_the_thresholds_reached(
    store: GuardStore, limit: int, thresholds: tuple[int, ...], costs: list[int]
) -> None:
    org = Org()
    budget = org.budget(limit, hard=False, thresholds=thresholds)
    reported: list[Crossing] = []
    spent = 0
    for cost in costs:
        crossed = await charge(store, org, budget, cost)
        assert list(crossed) == crossings_of(budget, spent, spent + cost)
        spent += cost
        reported += crossed
    reached = [pct for pct, amount in budget.threshold_amounts() if amount <= spent]
    assert [c.percent for c in reported] == reached


def test_encoding_round_trips() -> None:
    crossings = [Crossing("bud_1", "-", 0, 90, 10**17), Crossing("bud_2", "usr_x", 1, 50, 3)]
    assert decode_crossings(encode_crossings(crossings)) == crossings
    assert decode_crossings(None) == [] == decode_crossings("")


async def test_redis_appends_the_crossings_with_the_usage_event(
    redis_url: str, redis_prefix: str
) -> None:
    store = make_store("redis", ManualClock(START), redis_url, redis_prefix)
    assert isinstance(store, RedisGuardStore)
    client = Redis.from_url(redis_url)
    try:
        org = Org()
        budget = org.budget(10 * USD, thresholds=(50,))
        first = await store.reserve(org.plan(4 * USD, budget), Seeds())
        second = await store.reserve(org.plan(4 * USD, budget), Seeds())
        assert isinstance(first, Reserved) and isinstance(second, Reserved)
        await store.settle(first, 4 * USD, 0, b'{"n": 1}')
        await store.settle(second, 4 * USD, 0, b'{"n": 2}')
        entries = await client.xrange(stream_key(redis_prefix, org.id))
        assert [fields.get(b"x") for _, fields in entries] == [
            None,
            f"{budget.budget_id}/-/0/50/{8 * USD}".encode(),
        ]
    finally:
        await client.aclose()
        await close_store(store)
