"""One contract for both counter stores: Redis (production) and in-process (embedded)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import CounterStore, CounterStoreUnavailable
from sluicegate.guard.memory import MemoryCounterStore
from sluicegate.guard.redis import RedisCounterStore
from sluicegate.runtime import connect_redis


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    client = connect_redis(request.getfixturevalue("redis_url"), pool_size=8)
    prefix = request.getfixturevalue("redis_prefix")
    try:
        yield RedisCounterStore(client, prefix)
    finally:
        await client.aclose()


def fresh_key() -> str:
    return f"{{org_test}}:counter:{uuid.uuid4().hex}"


async def test_missing_counter_reads_zero(store: CounterStore) -> None:
    assert await store.get(fresh_key()) == 0


async def test_increments_add_up_and_may_be_negative(store: CounterStore) -> None:
    key = fresh_key()
    assert await store.increment(key, 5) == 5
    assert await store.increment(key, -2) == 3
    assert await store.get(key) == 3


async def test_concurrent_increments_lose_nothing(store: CounterStore) -> None:
    key = fresh_key()
    await asyncio.gather(*(store.increment(key, 3, ttl_seconds=60) for _ in range(200)))
    assert await store.get(key) == 600


async def test_delete_resets(store: CounterStore) -> None:
    key = fresh_key()
    await store.increment(key, 7)
    await store.delete(key)
    assert await store.get(key) == 0


async def test_counter_expires_after_its_ttl_and_later_increments_keep_the_window(
    store: CounterStore,
) -> None:
    key = fresh_key()
    await store.increment(key, 1, ttl_seconds=0.3)
    await asyncio.sleep(0.15)
    await store.increment(key, 1, ttl_seconds=10)  # must not push the deadline out
    assert await store.get(key) == 2
    await asyncio.sleep(0.3)
    assert await store.get(key) == 0


async def test_ping_answers(store: CounterStore) -> None:
    await store.ping()


def test_memory_store_expiry_follows_the_injected_clock() -> None:
    clock = ManualClock()
    store = MemoryCounterStore(clock)

    async def scenario() -> None:
        await store.increment("k", 4, ttl_seconds=60)
        clock.advance(59)
        assert await store.get("k") == 4
        clock.advance(1)
        assert await store.get("k") == 0

    asyncio.run(scenario())


async def test_unreachable_redis_raises_unavailable_not_a_driver_error() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    store = RedisCounterStore(client, "sgtest")
    try:
        with pytest.raises(CounterStoreUnavailable):
            await store.increment("k")
        with pytest.raises(CounterStoreUnavailable):
            await store.ping()
    finally:
        await client.aclose()


async def test_redis_keys_live_under_the_prefix(redis_url: str, redis_prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        key = fresh_key()
        await RedisCounterStore(client, redis_prefix).increment(key, 1)
        assert await client.get(f"{redis_prefix}:{key}") == b"1"
    finally:
        await client.aclose()
