"""One contract for both counter stores: Redis (Lua scripts) and in-process (embedded)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import (
    RATE_WINDOW_MS,
    Blocked,
    CounterStoreUnavailable,
    CreditSeed,
    GuardStore,
    Reserved,
)
from sluicegate.guard.redis import RedisGuardStore
from tests.guard.stores import START, TTL_MS, Org, Seeds, close_store, make_store

USD = 1_000_000_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[GuardStore]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    prefix = request.getfixturevalue("redis_prefix") if request.param == "redis" else ""
    active = make_store(request.param, clock, redis_url, prefix)
    try:
        yield active
    finally:
        await close_store(active)


async def reserved(store: GuardStore, plan, seeds: Seeds | None = None) -> Reserved:
    result = await store.reserve(plan, seeds or Seeds())
    assert isinstance(result, Reserved), result
    return result


async def test_settle_turns_the_reservation_into_the_actual_cost(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(10 * USD)
    seeds = Seeds({org.credit.key: CreditSeed(50 * USD, 50 * USD, 1)})
    done = await reserved(store, org.plan(3 * USD, budget, org.credit), seeds)
    assert [v.reserved for v in await store.read([budget, org.credit], Seeds())] == [3 * USD] * 2
    assert await store.settle(done, 2 * USD, 0) is not None
    values = await store.read([budget, org.credit], Seeds())
    assert (values[0].used, values[0].reserved) == (2 * USD, 0)
    assert (values[1].used, values[1].reserved) == (48 * USD, 0)


async def test_a_hard_budget_blocks_and_nothing_is_reserved_anywhere(store: GuardStore) -> None:
    org = Org()
    key_budget, org_budget = org.budget(10, name="key"), org.budget(5, name="org")
    seeds = Seeds({org_budget.key: 3})
    first = await store.reserve(org.plan(2, key_budget, org_budget), seeds)
    assert isinstance(first, Reserved)
    blocked = await store.reserve(org.plan(1, key_budget, org_budget), seeds)
    assert isinstance(blocked, Blocked)
    assert blocked.check == org_budget and (blocked.used, blocked.reserved) == (3, 2)
    values = await store.read([key_budget, org_budget], seeds)
    assert [v.reserved for v in values] == [2, 2]


async def test_the_first_failing_check_in_plan_order_is_named(store: GuardStore) -> None:
    org = Org()
    narrow, wide = org.budget(0, name="key"), org.budget(0, name="org")
    blocked = await store.reserve(org.plan(1, narrow, wide), Seeds())
    assert isinstance(blocked, Blocked) and blocked.check == narrow


async def test_a_limit_that_fits_exactly_admits_and_one_more_nano_blocks(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(10)
    await reserved(store, org.plan(10, budget))
    assert isinstance(await store.reserve(org.plan(1, budget), Seeds()), Blocked)


async def test_a_soft_budget_counts_but_never_blocks(store: GuardStore) -> None:
    org = Org()
    soft = org.budget(1, hard=False)
    done = await reserved(store, org.plan(5, soft))
    await store.settle(done, 5, 0)
    await reserved(store, org.plan(5, soft))
    value = (await store.read([soft], Seeds()))[0]
    assert (value.used, value.reserved) == (5, 5)


async def test_credit_blocks_when_the_balance_cannot_cover_the_reservation(
    store: GuardStore,
) -> None:
    org = Org()
    seeds = Seeds({org.credit.key: CreditSeed(100, 100, 1)})
    await reserved(store, org.plan(60, org.credit), seeds)
    blocked = await store.reserve(org.plan(41, org.credit), seeds)
    assert isinstance(blocked, Blocked) and blocked.check == org.credit
    assert (blocked.used, blocked.reserved) == (100, 60)
    await reserved(store, org.plan(40, org.credit), seeds)


async def test_a_second_settle_changes_nothing(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100)
    done = await reserved(store, org.plan(10, budget))
    assert await store.settle(done, 7, 0) is not None
    assert await store.settle(done, 7, 0) is None
    assert (await store.read([budget], Seeds()))[0].used == 7


async def test_a_retried_reserve_of_the_same_request_reserves_once(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100)
    plan = org.plan(10, budget)
    await reserved(store, plan)
    await reserved(store, plan)
    assert (await store.read([budget], Seeds()))[0].reserved == 10


async def test_an_unsettled_reservation_is_reclaimed_after_its_deadline(
    store: GuardStore, clock: ManualClock
) -> None:
    org = Org()
    budget = org.budget(10)
    await reserved(store, org.plan(10, budget))  # the gateway crashes: never settled
    assert isinstance(await store.reserve(org.plan(1, budget), Seeds()), Blocked)
    clock.advance(TTL_MS / 1000 - 1)
    assert (await store.read([budget], Seeds()))[0].reserved == 10
    clock.advance(1)
    assert (await store.read([budget], Seeds()))[0].reserved == 0
    await reserved(store, org.plan(10, budget))


async def test_an_extended_reservation_outlives_its_first_deadline(
    store: GuardStore, clock: ManualClock
) -> None:
    org = Org()
    budget = org.budget(10)
    done = await reserved(store, org.plan(10, budget))
    clock.advance(TTL_MS / 1000 - 1)
    assert await store.extend(done) is True
    clock.advance(TTL_MS / 1000 - 1)
    assert (await store.read([budget], Seeds()))[0].reserved == 10
    await store.settle(done, 4, 0)
    assert await store.extend(done) is False
    value = (await store.read([budget], Seeds()))[0]
    assert (value.used, value.reserved) == (4, 0)


async def test_a_settle_after_the_deadline_still_charges_once(
    store: GuardStore, clock: ManualClock
) -> None:
    org = Org()
    budget = org.budget(100)
    done = await reserved(store, org.plan(10, budget))
    clock.advance(TTL_MS / 1000 + 5)
    await store.read([budget], Seeds())  # reclaimed
    assert await store.settle(done, 9, 0) is not None
    value = (await store.read([budget], Seeds()))[0]
    assert (value.used, value.reserved) == (9, 0)


async def test_missing_counters_are_rebuilt_once_and_never_overwritten(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100)
    seeds = Seeds({budget.key: 40, org.credit.key: CreditSeed(500, 600, 2)})
    await reserved(store, org.plan(10, budget, org.credit), seeds)
    assert sorted(seeds.asked) == sorted([budget.key, org.credit.key])
    seeds.values[budget.key] = 99  # the database moved on; the live counter is what counts
    await reserved(store, org.plan(10, budget, org.credit), seeds)
    assert len(seeds.asked) == 2
    values = await store.read([budget, org.credit], seeds)
    assert (values[0].used, values[0].reserved) == (40, 20)
    assert (values[1].used, values[1].reserved) == (500, 20)


async def test_concurrent_rebuilds_agree_and_every_reservation_counts(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(1000)
    seeds = Seeds({budget.key: 100})
    results = await asyncio.gather(*(store.reserve(org.plan(10, budget), seeds) for _ in range(50)))
    assert all(isinstance(r, Reserved) for r in results)
    value = (await store.read([budget], seeds))[0]
    assert (value.used, value.reserved) == (100, 500)


async def test_under_concurrency_exactly_what_fits_is_admitted(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(20 * 7)
    results = await asyncio.gather(
        *(store.reserve(org.plan(7, budget), Seeds()) for _ in range(200))
    )
    assert sum(isinstance(r, Reserved) for r in results) == 20


async def test_requests_per_minute_slide_with_the_clock(
    store: GuardStore, clock: ManualClock
) -> None:
    org = Org()
    rpm = org.rate(3)
    for _ in range(3):
        await reserved(store, org.plan(0, rpm))
    blocked = await store.reserve(org.plan(0, rpm), Seeds())
    assert isinstance(blocked, Blocked) and blocked.check == rpm and blocked.used == 3
    # 30 s into the window: the next window starts in 30 s, when three requests of the previous
    # window still weigh 3 * (60 - 0) / 60; one fits once their weight falls under 3 - 1 = 2,
    # 20 s into the next window: 50 s from now.
    assert blocked.retry_after_ms == pytest.approx(50_000, abs=1_000)
    clock.advance(30)  # next window: the previous three still weigh 3 * 60/60
    assert isinstance(await store.reserve(org.plan(0, rpm), Seeds()), Blocked)
    clock.advance(20)  # 20 s in: they weigh 3 * 40/60 = 2
    await reserved(store, org.plan(0, rpm))
    clock.advance(RATE_WINDOW_MS / 1000)
    await reserved(store, org.plan(0, rpm))


async def test_remaining_requests_are_reported_for_headers(store: GuardStore) -> None:
    org = Org()
    rpm = org.rate(10)
    done = await reserved(store, org.plan(0, rpm))
    assert [(s.counter, s.remaining) for s in done.rates] == [(rpm, 9)]
    assert 0 < done.rates[0].reset_ms <= RATE_WINDOW_MS


async def test_tokens_per_minute_reserve_the_estimate_and_settle_the_actual(
    store: GuardStore,
) -> None:
    org = Org()
    tpm = org.rate(1000, per_token=True)
    done = await reserved(store, org.plan(0, tpm, tokens=800))
    assert isinstance(await store.reserve(org.plan(0, tpm, tokens=300), Seeds()), Blocked)
    await store.settle(done, 0, 100)  # it used 100 of the 800 it reserved
    after = await reserved(store, org.plan(0, tpm, tokens=300))
    assert after.rates[0].remaining == 1000 - 100 - 300


async def test_a_request_larger_than_the_whole_limit_can_never_pass(store: GuardStore) -> None:
    org = Org()
    tpm = org.rate(100, per_token=True)
    blocked = await store.reserve(org.plan(0, tpm, tokens=101), Seeds())
    assert isinstance(blocked, Blocked) and blocked.retry_after_ms == -1


async def test_credit_sync_applies_each_ledger_version_once(store: GuardStore) -> None:
    org = Org()
    seeds = Seeds({org.credit.key: CreditSeed(100, 100, 1)})
    await store.sync_credit(org.credit, CreditSeed(0, 150, 2))  # missing: stays missing
    assert (await store.read([org.credit], seeds))[0].used == 100
    await store.sync_credit(org.credit, CreditSeed(0, 150, 2))  # a top-up of 50
    await store.sync_credit(org.credit, CreditSeed(0, 150, 2))  # the same, again
    await store.sync_credit(org.credit, CreditSeed(0, 120, 1))  # an older view, late
    assert (await store.read([org.credit], seeds))[0].used == 150
    await store.sync_credit(org.credit, CreditSeed(0, 100, 3))  # an adjustment of -50
    assert (await store.read([org.credit], seeds))[0].used == 100


async def test_forgotten_counters_are_rebuilt(store: GuardStore) -> None:
    org = Org()
    budget = org.budget(100)
    seeds = Seeds({budget.key: 5})
    await store.read([budget], seeds)
    await store.forget([budget.key])
    seeds.values[budget.key] = 30
    assert (await store.read([budget], seeds))[0].used == 30


async def test_a_counter_rebuilt_under_live_reservations_never_goes_below_zero(
    store: GuardStore,
) -> None:
    org = Org()
    budget = org.budget(100)
    seeds = Seeds({budget.key: 0})
    first = await reserved(store, org.plan(30, budget), seeds)
    await store.forget([budget.key])  # dropped and rebuilt: it knows nothing of `first`
    second = await reserved(store, org.plan(20, budget), seeds)
    await store.settle(first, 30, 0)
    value = (await store.read([budget], seeds))[0]
    assert (value.used, value.reserved) == (30, 0)
    await store.settle(second, 20, 0)
    value = (await store.read([budget], seeds))[0]
    assert (value.used, value.reserved) == (50, 0)


async def test_amounts_beyond_double_precision_are_exact(store: GuardStore) -> None:
    org = Org()
    limit = 2**62 + 1  # about 4.6 billion USD: far past 2**53
    budget = org.budget(limit)
    seeds = Seeds({budget.key: 2**62 - 5})
    await reserved(store, org.plan(6, budget), seeds)
    assert isinstance(await store.reserve(org.plan(1, budget), seeds), Blocked)
    value = (await store.read([budget], seeds))[0]
    assert (value.used, value.reserved) == (2**62 - 5, 6)


async def test_a_budget_counter_is_forgotten_after_its_period(
    store: GuardStore, clock: ManualClock
) -> None:
    org = Org()
    now_ms = int(clock.now().timestamp() * 1000)
    budget = org.budget(100, expire_at_ms=now_ms + 1_000)
    seeds = Seeds({budget.key: 10})
    await store.read([budget], seeds)
    if isinstance(store, RedisGuardStore):
        await asyncio.sleep(1.1)  # Redis expires keys on its own clock
    else:
        clock.advance(1)
    seeds.values[budget.key] = 0
    assert (await store.read([budget], seeds))[0].used == 0


async def test_unreachable_redis_raises_unavailable_fast(clock: ManualClock) -> None:
    store = RedisGuardStore(Redis.from_url("redis://127.0.0.1:1/0"), "sgtest", clock)
    org = Org()
    try:
        for _ in range(2):
            with pytest.raises(CounterStoreUnavailable):
                await store.reserve(org.plan(1, org.budget(5)), Seeds())
        with pytest.raises(CounterStoreUnavailable):
            await store.ping()
    finally:
        await store._client.aclose()


async def test_redis_keys_carry_the_prefix_and_the_org_hash_tag(
    redis_url: str, redis_prefix: str, clock: ManualClock
) -> None:
    store = make_store("redis", clock, redis_url, redis_prefix)
    org = Org()
    try:
        await reserved(store, org.plan(1, org.budget(5), org.rate(5)))
        client = Redis.from_url(redis_url)
        keys = [k.decode() async for k in client.scan_iter(match=f"*{org.id}*")]
        await client.aclose()
        assert keys and all(k.startswith(f"{redis_prefix}:{{{org.id}}}:") for k in keys), keys
    finally:
        await close_store(store)
