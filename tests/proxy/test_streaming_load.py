"""Streams under load and streams that end early: every request is metered, exactly."""

from __future__ import annotations

import asyncio

import httpx
import orjson

from sluicegate.runtime import Runtime
from tests.factories import Tenant
from tests.proxy.conftest import usage_events
from tests.support import ServerProcess

CONCURRENT_STREAMS = 500


async def _stream_once(client: httpx.AsyncClient, key: str, index: int) -> tuple[int, int, int]:
    """One streamed chat; returns (status, prompt tokens, completion tokens) as the client saw."""
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": " ".join(["word"] * (index % 7 + 1))}],
        "max_tokens": index % 16 + 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as response:
        usage = None
        lines = []
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                usage = chunk.get("usage") or usage
        assert usage is not None, (response.status_code, lines[-3:])
        return response.status_code, usage["prompt_tokens"], usage["completion_tokens"]


async def test_concurrent_streams_complete_and_usage_matches_what_clients_received(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    limits = httpx.Limits(max_connections=CONCURRENT_STREAMS)
    async with httpx.AsyncClient(base_url=gateway.base_url, limits=limits, timeout=120) as client:
        results = await asyncio.gather(
            *(_stream_once(client, tenant.key, i) for i in range(CONCURRENT_STREAMS))
        )
    assert all(status == 200 for status, _, _ in results)
    events = await usage_events(runtime, tenant.org_id, expect=CONCURRENT_STREAMS, timeout=30)
    assert len(events) == CONCURRENT_STREAMS
    assert sum(e.prompt_tokens for e in events) == sum(p for _, p, _ in results)
    assert sum(e.completion_tokens for e in events) == sum(c for _, _, c in results)
    assert not any(e.usage_estimated for e in events)
    assert len({e.request_id for e in events}) == CONCURRENT_STREAMS


async def test_client_disconnect_cancels_and_bills_what_was_streamed(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    """The paced model streams 50 words 40 ms apart; the client leaves after a few."""
    received = 0
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "paced-model",
                "stream": True,
                "messages": [{"role": "user", "content": "tell me a long story"}],
            },
            headers={"authorization": f"Bearer {tenant.key}"},
        ) as response:
            async for line in response.aiter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    received += 1
                if received >= 5:
                    break
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.status_code == 499 and event.error_type == "client_disconnected"
    # The upstream never sent its usage (the stream was cut short), so it is estimated from
    # what was relayed: at least what the client read, far below the 50 words of a full answer.
    assert event.usage_estimated
    assert received <= event.completion_tokens < 50
    assert event.cost_nusd > 0
