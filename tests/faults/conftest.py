"""Fixtures of the fault tests: the proxy tests' providers, tenants with budgets made through the
same services the admin API calls, and gateways (in-process or `sluicegate serve`) on Redis and
Postgres servers the test may break."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sluicegate.app import create_app
from sluicegate.core.clock import Clock
from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import make_settings, settings_env
from tests.factories import Tenant, make_tenant, put_tenant_budget
from tests.metering.books import Books, read_books
from tests.proxy.conftest import MOCK_KEY_ENV, provider_settings, providers_file, providers_yaml
from tests.support import ServerProcess

__all__ = ["provider_settings", "providers_file"]

CHAT = "/v1/chat/completions"
# "abcd" is 8 prompt tokens for the mock and for our estimate, and max_tokens 16 is what the
# mock answers: a call's reservation equals its cost (gpt-4o-mini, 0.15 / 0.60 USD per 1M).
COST = 8 * 150 + 16 * 600


def chat_body(*, stream: bool = False, model: str = "gpt-4o-mini") -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "abcd"}],
        "max_tokens": 16,
        "stream": stream,
    }


# A stream of 16 chunks, one every 300 ms: about five seconds in flight, priced as gpt-4o-mini.
SLOW_STREAM_MODEL = "slow-stream"


@pytest.fixture(scope="session")
def fault_providers_file(
    mock_upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The proxy tests' providers, and a model whose streams stay in flight for seconds."""
    base = providers_yaml(mock_upstream.base_url)
    head, models = base.split("models:\n", 1)
    slow = f"""  - name: mock-slow-stream
    type: openai
    base_url: {mock_upstream.base_url}/v1
    headers:
      x-mock-stream-delay-ms: "300"
"""
    model = f"""  - id: {SLOW_STREAM_MODEL}
    provider: mock-slow-stream
    upstream_model: gpt-4o-mini
    mode: chat
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.60
"""
    path = tmp_path_factory.mktemp("fault-providers") / "providers.yaml"
    path.write_text(f"{head}{slow}models:\n{models}{model}")
    return path


def serve_env(settings: Settings, providers: Path, **more: str) -> dict[str, str]:
    """Environment of a `sluicegate serve` on these settings, with these providers."""
    return {
        **settings_env(settings),
        **MOCK_KEY_ENV,
        "SLUICEGATE_PROVIDERS": str(providers),
        **{f"SLUICEGATE_{name.upper()}": value for name, value in more.items()},
    }


def redis_settings(postgres_url: str, redis_url: str, **more: object) -> Settings:
    return make_settings(database_url=postgres_url, redis_url=redis_url, redis_prefix="sg", **more)


@contextlib.asynccontextmanager
async def in_process_gateway(
    settings: Settings, providers: ProviderSettings, clock: Clock | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """The app with its lifespan (usage drain included) over ASGI, and its runtime."""
    active = Runtime.build(settings, clock)
    await active.start()
    app = create_app(settings, active, providers)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway.test", timeout=30
            ) as client:
                yield client, active
    finally:
        await active.close()


@dataclass
class Budgeted:
    tenant: Tenant
    budget_id: str


async def tenant_with_budget(
    runtime: Runtime, limit_nusd: int, *, enforcement: str = "hard", scope: str = "key"
) -> Budgeted:
    """A tenant whose key (or org) has a daily budget of `limit_nusd`."""
    tenant = await make_tenant(runtime)
    budget_id = await put_tenant_budget(
        runtime, tenant, limit_nusd, scope=scope, period="day", enforcement=enforcement
    )
    return Budgeted(tenant, budget_id)


async def books_when(
    runtime: Runtime, org_id: str, done: object, *, timeout: float = 10.0
) -> Books:
    """The org's books once `done(books)` holds (the drain works in the background), or as they
    are at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        async with runtime.sessions() as session:
            books = await read_books(session, org_id)
        if done(books) or time.monotonic() > deadline:  # type: ignore[operator]
            return books
        await asyncio.sleep(0.1)
