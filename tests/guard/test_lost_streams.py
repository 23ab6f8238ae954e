"""A stream whose gateway dies after its first bytes (SIGKILL, out of memory) is never settled by
it: when its reservation expires, what is known of it, its prompt, is billed on the counters it
held and its usage event logged; a settle arriving late changes nothing."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import orjson

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import Reserved
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.metering.stream import stream_key
from sluicegate.runtime import connect_redis
from tests.guard.stores import TTL_MS, Org, Seeds


async def test_an_expired_started_stream_is_billed_what_is_known_and_logged_once(
    redis_url: str, redis_prefix: str
) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    prefix = f"{redis_prefix}:lost{secrets.token_hex(4)}"
    store = RedisGuardStore(connect_redis(redis_url, 8), prefix, clock, reservation_ttl_ms=TTL_MS)
    org = Org()
    budget = org.budget(1000)
    plan = org.plan(300, budget)
    held = await store.reserve(plan, Seeds({budget.key: 0}))
    assert isinstance(held, Reserved)
    event = orjson.dumps({"request_id": plan.request_id, "error_type": "gateway_lost"})
    assert await store.mark_started(held, event, 120)

    clock.advance(TTL_MS / 1000 + 1)  # the gateway died: nobody settles or extends it
    [value] = await store.read([budget], Seeds())
    assert (value.used, value.reserved) == (120, 0)
    stream = stream_key(prefix, org.id)
    entries = await store._client.xrange(stream)
    assert [fields[b"e"] for _, fields in entries] == [event]

    assert await store.settle(held, 300, 0, b"{}") is None  # late: settled already
    [value] = await store.read([budget], Seeds())
    assert value.used == 120
    assert len(await store._client.xrange(stream)) == 1
    await store._client.aclose()


async def test_a_settled_stream_leaves_nothing_to_bill(redis_url: str, redis_prefix: str) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    prefix = f"{redis_prefix}:lost{secrets.token_hex(4)}"
    store = RedisGuardStore(connect_redis(redis_url, 8), prefix, clock, reservation_ttl_ms=TTL_MS)
    org = Org()
    budget = org.budget(1000)
    held = await store.reserve(org.plan(300, budget), Seeds({budget.key: 0}))
    assert isinstance(held, Reserved)
    assert await store.mark_started(held, b'{"lost": true}', 120)
    await store.settle(held, 250, 0)
    clock.advance(TTL_MS / 1000 + 1)
    [value] = await store.read([budget], Seeds())
    assert (value.used, value.reserved) == (250, 0)
    assert await store._client.xlen(stream_key(prefix, org.id)) == 0
    await store._client.aclose()
