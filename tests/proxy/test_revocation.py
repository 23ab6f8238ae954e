"""A disabled key is refused within a second on every worker (Redis pub/sub invalidation)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from sluicegate.runtime import Runtime
from tests.conftest import GatewayStarter, make_settings
from tests.proxy.conftest import MOCK_KEY_ENV, make_tenant, set_key_status

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS = 30


def _statuses(base_url: str, key: str) -> set[int]:
    statuses = set()
    for _ in range(REQUESTS):
        # A fresh connection each time, so requests spread over both worker processes.
        response = httpx.post(
            base_url + "/v1/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {key}"},
        )
        statuses.add(response.status_code)
    return statuses


async def test_disabled_key_is_refused_within_a_second_on_every_worker(
    start_gateway: GatewayStarter,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    providers_file: Path,
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix
    )
    gateway = start_gateway(
        settings,
        env={"SLUICEGATE_PROVIDERS": str(providers_file), **MOCK_KEY_ENV},
        args=("--workers", "2"),
    )
    runtime = Runtime.build(settings)
    try:
        tenant = await make_tenant(runtime)
        # Every worker now holds the key's context in its cache (10 s TTL).
        assert await asyncio.to_thread(_statuses, gateway.base_url, tenant.key) == {200}
        await set_key_status(runtime, tenant, "disabled")
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(_statuses, gateway.base_url, tenant.key) == {401}
    finally:
        await runtime.close()
