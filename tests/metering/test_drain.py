"""The drain on real Redis and Postgres: entries a dead consumer left pending are taken over and
stored; entries stored before a crash and delivered again add nothing twice; entries that are
not usage events go to the dead-letter stream, not to the floor."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluicegate.metering.drain import UsageDrain
from sluicegate.metering.stream import (
    DRAIN_GROUP,
    EVENT_FIELD,
    UsageStreams,
    dead_letter_key,
    decode_event,
    encode_event,
    stream_key,
)
from sluicegate.metering.writer import store_usage
from sluicegate.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import Tenant, make_tenant
from tests.metering.books import read_books


@pytest.fixture
async def pg_runtime(
    postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Runtime]:
    """Postgres and Redis, under a key prefix of this test alone: no other drain reads it."""
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{redis_prefix}:drain{secrets.token_hex(4)}",
    )
    runtime = Runtime.build(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


def events(tenant: Tenant, count: int) -> list[dict[str, Any]]:
    start = datetime(2026, 3, 28, 22, 50, tzinfo=UTC)  # spans midnight UTC and several hours
    return [
        {
            "request_id": f"req_drain_{secrets.token_hex(6)}_{n}",
            "created_at": start + timedelta(minutes=7 * n, microseconds=n),
            "org_id": tenant.org_id,
            "group_id": tenant.group_id,
            "key_id": tenant.key_id,
            "user_id": tenant.user_id,
            "requested_model": "gpt-4o-mini",
            "served_model": "gpt-4o-mini",
            "provider": "mock-openai",
            "app": None,
            "prompt_tokens": 10 + n,
            "completion_tokens": n,
            "cached_tokens": 0,
            "cost_nusd": 1_000 * (n + 1),
            "latency_ms": 5,
            "ttft_ms": None,
            "status_code": 200,
            "error_type": None,
            "stream": False,
            "usage_estimated": False,
            "routing": None,
        }
        for n in range(count)
    ]


async def append_all(runtime: Runtime, tenant: Tenant, batch: list[dict[str, Any]]) -> None:
    assert runtime.redis is not None
    streams = UsageStreams(runtime.redis, runtime.settings.redis_prefix)
    for event in batch:
        await streams.append(tenant.org_id, encode_event(event))


def drain_of(runtime: Runtime, **options: Any) -> UsageDrain:
    assert runtime.redis is not None
    return UsageDrain(runtime.redis, runtime.settings.redis_prefix, runtime.sessions, **options)


async def drain_until_empty(drain: UsageDrain) -> None:
    for _ in range(20):
        await drain.drain_round()
        if await drain.backlog() == 0:
            return
    raise AssertionError("the drain did not empty the streams")


async def test_a_dead_consumers_entries_are_taken_over_and_a_redelivery_adds_nothing_twice(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    batch = events(tenant, 30)
    await append_all(runtime, tenant, batch)
    stream = stream_key(runtime.settings.redis_prefix, tenant.org_id)
    # the first append made the stream with its consumer group
    # A consumer reads 20 entries, commits the first 10 and dies before acknowledging any.
    answer = await runtime.redis.xreadgroup(DRAIN_GROUP, "dead-consumer", {stream: ">"}, count=20)
    delivered = answer[0][1]
    assert len(delivered) == 20
    async with runtime.sessions() as session, session.begin():
        committed = [decode_event(fields[EVENT_FIELD]) for _, fields in delivered[:10]]
        assert await store_usage(session, committed) == 10

    drain = drain_of(runtime, claim_idle_ms=0)
    await drain_until_empty(drain)

    assert (drain.stats.stored, drain.stats.duplicates, drain.stats.dead) == (20, 10, 0)
    async with runtime.sessions() as session:
        books = await read_books(session, tenant.org_id)
    books.assert_consistent()
    assert books.request_ids == {event["request_id"] for event in batch}
    assert books.cost_nusd == sum(event["cost_nusd"] for event in batch)
    pending = await runtime.redis.xpending(stream, DRAIN_GROUP)
    assert pending["pending"] == 0
    assert await runtime.redis.xlen(stream) == 0


async def test_entries_pending_at_a_live_consumer_are_left_to_it(pg_runtime: Runtime) -> None:
    """Taking over waits for the idle time: a slow but live worker is not raced."""
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    await append_all(runtime, tenant, events(tenant, 5))
    stream = stream_key(runtime.settings.redis_prefix, tenant.org_id)
    # the first append made the stream with its consumer group
    await runtime.redis.xreadgroup(DRAIN_GROUP, "busy-consumer", {stream: ">"}, count=5)

    drain = drain_of(runtime, claim_idle_ms=60_000)
    await drain.drain_round()
    assert drain.stats.stored == 0
    assert (await runtime.redis.xpending(stream, DRAIN_GROUP))["pending"] == 5


async def test_entries_that_are_not_usage_events_go_to_the_dead_letter_stream(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    assert runtime.redis is not None
    tenant = await make_tenant(runtime)
    good = events(tenant, 3)
    await append_all(runtime, tenant, good[:2])
    stream = stream_key(runtime.settings.redis_prefix, tenant.org_id)
    await runtime.redis.xadd(stream, {EVENT_FIELD: b"not json"})
    await runtime.redis.xadd(stream, {b"other": b"field"})
    await append_all(runtime, tenant, good[2:])

    drain = drain_of(runtime)
    await drain_until_empty(drain)

    assert (drain.stats.stored, drain.stats.dead) == (3, 2)
    dead = await runtime.redis.xrange(dead_letter_key(runtime.settings.redis_prefix))
    assert [fields.get(b"stream") for _, fields in dead] == [stream.encode()] * 2
    assert [fields.get(EVENT_FIELD) for _, fields in dead] == [b"not json", None]
    async with runtime.sessions() as session:
        books = await read_books(session, tenant.org_id)
    books.assert_consistent()
    assert books.request_ids == {event["request_id"] for event in good}
