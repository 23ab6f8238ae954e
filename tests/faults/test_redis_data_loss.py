"""Redis losing its data (FLUSHALL, a restart without persistence) while the gateway runs: every
usage event settled afterwards still reaches the database without a restart, and counters
rebuilt from the database count what requests in flight hold and what waits in the streams, so a
budget admits no more than it fits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from sluicegate.metering.stream import registry_key, stream_key
from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from tests.conftest import GatewayStarter
from tests.factories import make_tenant
from tests.faults.conftest import (
    CHAT,
    COST,
    SLOW_STREAM_MODEL,
    books_when,
    chat_body,
    in_process_gateway,
    redis_settings,
    serve_env,
    tenant_with_budget,
)
from tests.faults.servers import RedisServer

DRAINED_WITHIN_SECONDS = 10.0


async def test_events_settled_after_a_flush_are_drained_without_a_restart(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    settings = redis_settings(postgres_url, own_redis.url)
    async with in_process_gateway(settings, provider_settings) as (client, runtime):
        # One key without guardrails (a plain append) and one under a budget (the settle script).
        plain = await make_tenant(runtime)
        governed = (await tenant_with_budget(runtime, 1000 * COST)).tenant

        async def call(key: str, count: int) -> None:
            for _ in range(count):
                answer = await client.post(
                    CHAT, json=chat_body(), headers={"authorization": f"Bearer {key}"}
                )
                assert answer.status_code == 200, answer.text

        await call(plain.key, 1)
        await call(governed.key, 1)
        for tenant in (plain, governed):
            books = await books_when(runtime, tenant.org_id, lambda b: b.rows == 1)
            assert books.rows == 1
        own_redis.flushall()

        await call(plain.key, 5)
        await call(governed.key, 5)

        for tenant in (plain, governed):
            books = await books_when(
                runtime, tenant.org_id, lambda b: b.rows == 6, timeout=DRAINED_WITHIN_SECONDS
            )
            assert books.rows == 6, "events settled after the flush were stranded"
            books.assert_consistent()
            assert books.cost_nusd == 6 * COST
        redis = own_redis.client()
        try:
            registered = {m.decode() for m in redis.smembers(registry_key("sg"))}
            assert {plain.org_id, governed.org_id} <= registered
            # Stored, then deleted from the stream (acknowledged after the commit).
            deadline = time.monotonic() + DRAINED_WITHIN_SECONDS
            streams = [stream_key("sg", tenant.org_id) for tenant in (plain, governed)]
            while any(redis.xlen(s) for s in streams) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert [redis.xlen(s) for s in streams] == [0, 0]
        finally:
            redis.close()


async def test_a_stream_nobody_registered_is_found_by_the_drain(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    """A gateway killed between creating a stream and registering it, or a snapshot restored
    from before the registration, leaves a stream the registry does not name."""
    settings = redis_settings(postgres_url, own_redis.url)
    async with in_process_gateway(settings, provider_settings) as (client, runtime):
        tenant = await make_tenant(runtime)
        answer = await client.post(
            CHAT, json=chat_body(), headers={"authorization": f"Bearer {tenant.key}"}
        )
        assert answer.status_code == 200
        assert (await books_when(runtime, tenant.org_id, lambda b: b.rows == 1)).rows == 1
        redis = own_redis.client()
        try:
            redis.delete(registry_key("sg"))
        finally:
            redis.close()
        await asyncio.gather(
            *(
                client.post(
                    CHAT, json=chat_body(), headers={"authorization": f"Bearer {tenant.key}"}
                )
                for _ in range(3)
            )
        )
        # The app's drain looks for unregistered streams every minute; do it now.
        drain = client._transport.app.state.worker.drain  # type: ignore[attr-defined]
        assert await drain.discover() == 1
        books = await books_when(runtime, tenant.org_id, lambda b: b.rows == 4)
        assert books.rows == 4
        books.assert_consistent()


IN_FLIGHT = 10
FITS = 20  # the budget fits this many calls, IN_FLIGHT of them streams in flight at the flush


async def test_a_flush_with_streams_in_flight_admits_no_more_than_the_budget(
    postgres_url: str,
    own_redis: RedisServer,
    fault_providers_file: Path,
    start_gateway: GatewayStarter,
) -> None:
    """Two gateway workers; ten streams reserved, then Redis loses everything. The rebuilt
    budget must still count the ten reservations (put back by the workers that hold them) and
    the streams' charges (settled while it was missing), so exactly ten more calls fit."""
    settings = redis_settings(postgres_url, own_redis.url)
    runtime = Runtime.build(settings)
    await runtime.start()
    try:
        budgeted = await tenant_with_budget(runtime, FITS * COST)
        tenant = budgeted.tenant
        gateway = start_gateway(env=serve_env(settings, fault_providers_file, workers="2"))
        url = gateway.base_url + CHAT
        headers = {"authorization": f"Bearer {tenant.key}"}
        async with httpx.AsyncClient(timeout=60) as http:
            started = asyncio.Event()
            running = 0

            async def stream() -> int:
                nonlocal running
                body = chat_body(stream=True, model=SLOW_STREAM_MODEL)
                async with http.stream("POST", url, json=body, headers=headers) as answer:
                    if answer.status_code != 200:
                        return answer.status_code
                    chunks = answer.aiter_raw()
                    await anext(chunks)
                    running += 1
                    if running == IN_FLIGHT:
                        started.set()
                    rest = [chunk async for chunk in chunks]
                    assert rest, "the stream ended at its first chunk"
                    return 200

            streams = [asyncio.create_task(stream()) for _ in range(IN_FLIGHT)]
            # Each stream counts once it has sent its first chunk (it holds its reservation).
            await asyncio.wait_for(started.wait(), 30)
            own_redis.flushall()
            after: list[int] = []
            while len(after) < 2 * FITS:
                answer = await http.post(url, json=chat_body(), headers=headers)
                after.append(answer.status_code)
                if answer.status_code == 402:
                    break
            streamed = await asyncio.gather(*streams)
        assert streamed == [200] * IN_FLIGHT
        admitted = IN_FLIGHT + after.count(200)
        assert admitted <= FITS, f"{admitted} calls admitted against a budget of {FITS}"
        assert after[-1] == 402 and set(after) <= {200, 402}, after
        books = await books_when(runtime, tenant.org_id, lambda b: b.rows == IN_FLIGHT + len(after))
        assert books.rows == IN_FLIGHT + len(after), "a call's usage event was lost"
        books.assert_consistent()
        assert books.cost_nusd == admitted * COST <= FITS * COST
    finally:
        await runtime.close()
