"""A gateway killed with SIGKILL in the middle of a stream: once the stream's reservation
expires, what is known of it (its prompt) is billed and recorded as `gateway_lost`, exactly
once, and the books still agree."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from sluicegate.runtime import Runtime
from tests.conftest import GatewayStarter, make_settings
from tests.faults.conftest import (
    CHAT,
    SLOW_STREAM_MODEL,
    books_when,
    chat_body,
    serve_env,
    tenant_with_budget,
)

# The shortest reservation the settings allow: it must outlive a whole non-streaming call,
# which the gateway started here gives 5 s (streams renew theirs while they run).
TTL_SECONDS = 10
# "abcd" is 8 prompt tokens at 0.15 USD per 1M (the slow-stream model's price).
PROMPT_COST = 8 * 150


async def started_noted(runtime: Runtime, org_id: str, request_id: str) -> None:
    """Wait until the usage event of a started stream is kept beside its reservation."""
    assert runtime.redis is not None
    key = f"{runtime.settings.redis_prefix}:{{{org_id}}}:rsv:{request_id}:u"
    deadline = time.monotonic() + 30
    while not await runtime.redis.exists(key):
        assert time.monotonic() < deadline, "the started stream was never noted"
        await asyncio.sleep(0.01)


async def test_a_stream_cut_by_a_killed_gateway_bills_its_prompt_once(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    fault_providers_file: Path,
    start_gateway: GatewayStarter,
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{redis_prefix}:lost{secrets.token_hex(4)}",
    )
    runtime = Runtime.build(settings)
    await runtime.start()
    try:
        tenant = (await tenant_with_budget(runtime, 10**9)).tenant
        env = serve_env(
            settings,
            fault_providers_file,
            reservation_ttl_seconds=str(TTL_SECONDS),
            upstream_timeout="5",
        )
        doomed = start_gateway(env=env)
        headers = {"authorization": f"Bearer {tenant.key}", "x-request-id": "req-lost-stream"}
        body = chat_body(stream=True, model=SLOW_STREAM_MODEL)
        async with httpx.AsyncClient(timeout=30) as http:
            # A first call, settled: the org's usage stream exists (a stream first made by the
            # reclaim itself is found by the drain's scan, within a minute).
            first = await http.post(
                doomed.base_url + CHAT,
                json=chat_body(),
                headers={"authorization": f"Bearer {tenant.key}"},
            )
            assert first.status_code == 200
            try:
                async with http.stream(
                    "POST", doomed.base_url + CHAT, json=body, headers=headers
                ) as answer:
                    assert answer.status_code == 200
                    async for _ in answer.aiter_raw():
                        # Its first bytes are out; the gateway notes what to bill beside the
                        # reservation at the same time (a kill before that bills nothing).
                        await started_noted(runtime, tenant.org_id, "req-lost-stream")
                        cut_at = time.monotonic()
                        doomed.process.kill()
                        break
            except httpx.TransportError:
                cut_at = time.monotonic()  # the kill cut the read itself
            doomed.process.wait()
            survivor = start_gateway(env=env)
            # Once the reservation has expired, the org's next call reclaims it.
            await asyncio.sleep(max(0.0, TTL_SECONDS + 1 - (time.monotonic() - cut_at)))
            answer = await http.post(
                survivor.base_url + CHAT,
                json=chat_body(),
                headers={"authorization": f"Bearer {tenant.key}"},
            )
            assert answer.status_code == 200
        books = await books_when(runtime, tenant.org_id, lambda b: b.rows == 3, timeout=30)
        assert "req-lost-stream" in books.request_ids
        books.assert_consistent()
        async with runtime.sessions() as session:
            lost = (
                await session.execute(
                    text(
                        "SELECT status_code, error_type, prompt_tokens, completion_tokens, "
                        "cost_nusd, usage_estimated FROM usage_events WHERE request_id = :r"
                    ),
                    {"r": "req-lost-stream"},
                )
            ).one()
        assert tuple(lost) == (502, "gateway_lost", 8, 0, PROMPT_COST, True)
    finally:
        await runtime.close()
