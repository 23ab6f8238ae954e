"""Fixtures of the proxy tests: a providers file aimed at the mock upstream, tenants (from
tests/factories.py, made through the services the admin API calls), and a gateway serving them
over loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from sluicegate.app import create_app
from sluicegate.keys.service import update_key
from sluicegate.metering.models import UsageEvent
from sluicegate.providers.config import ProviderSettings, load_providers
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter
from tests.factories import Tenant, make_tenant
from tests.support import ServerProcess

# Models that make the mock fail in a chosen way; priced explicitly (no catalog entry).
FAILURE_MODELS = (
    "mock-error-500",
    "mock-error-429",
    "mock-slow",
    "mock-cut",
    "mock-invalid-json",
    "mock-no-usage",
)


def providers_yaml(mock_url: str) -> str:
    failures = "\n".join(
        f"""  - id: {name}
    provider: mock-openai
    mode: chat
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2"""
        for name in FAILURE_MODELS
    )
    return f"""providers:
  - name: mock-openai
    type: openai
    base_url: {mock_url}/v1
    api_key_env: SLUICEGATE_TEST_MOCK_KEY
  - name: mock-anthropic
    type: anthropic
    base_url: {mock_url}/v1
    api_key: anthropic-test-key
  - name: mock-paced
    type: openai
    base_url: {mock_url}/v1
    headers:
      x-mock-stream-delay-ms: "40"
      x-mock-completion-tokens: "50"
  - name: mock-azure
    type: azure
    base_url: {mock_url}
    api_key: azure-test-key
    api_version: 2024-10-21
  - name: mock-misplaced
    type: openai
    base_url: {mock_url}/nowhere/v1
models:
  - id: gpt-4o-mini
    provider: mock-openai
  - id: text-embedding-3-small
    provider: mock-openai
  - id: claude-3-5-haiku
    provider: mock-anthropic
    upstream_model: claude-3-5-haiku-20241022
  - id: azure-gpt
    provider: mock-azure
    upstream_model: gpt-4o-mini
  - id: paced-model
    provider: mock-paced
    upstream_model: gpt-4o-mini
  - id: misplaced-model
    provider: mock-misplaced
    upstream_model: gpt-4o-mini
{failures}
"""


MOCK_KEY_ENV = {"SLUICEGATE_TEST_MOCK_KEY": "mock-openai-key"}


@pytest.fixture(scope="session")
def providers_file(mock_upstream: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("providers") / "providers.yaml"
    path.write_text(providers_yaml(mock_upstream.base_url))
    return path


@pytest.fixture(scope="session")
def provider_settings(providers_file: Path) -> ProviderSettings:
    return load_providers(providers_file, MOCK_KEY_ENV)


async def set_key_status(runtime: Runtime, tenant: Tenant, status: str) -> None:
    """Enable or disable the tenant's key through the keys service, as the admin API does."""
    async with runtime.unit_of_work() as session:
        await update_key(
            session,
            tenant.actor,
            tenant.org_id,
            tenant.key_id,
            {"status": status},
            runtime.clock.now(),
        )


@pytest.fixture
def tenant_factory(runtime: Runtime) -> Callable[..., Any]:
    async def make(**kwargs: Any) -> Tenant:
        return await make_tenant(runtime, **kwargs)

    return make


@pytest.fixture
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime)


async def usage_events(
    runtime: Runtime, org_id: str, *, expect: int, timeout: float = 5.0
) -> list[UsageEvent]:
    """The org's usage rows, waiting for the buffered writer to deliver `expect` of them."""
    deadline = time.monotonic() + timeout
    while True:
        async with runtime.sessions() as session:
            rows = list(
                await session.scalars(
                    select(UsageEvent)
                    .where(UsageEvent.org_id == org_id)
                    .order_by(UsageEvent.created_at)
                )
            )
        if len(rows) >= expect or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def gateway_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One gateway per backend for the whole session: starting a process costs seconds."""
    starter = GatewayStarter(tmp_path_factory.mktemp("gateways"), [])
    pool: dict[str, Any] = {"starter": starter}
    yield pool
    for server in starter.started:
        server.stop()


@pytest.fixture
def gateway(
    gateway_pool: dict[str, Any], backend: str, settings: Settings, providers_file: Path
) -> ServerProcess:
    """`sluicegate serve` on this test's backend, with the mock providers (shared, see pool)."""
    server: ServerProcess | None = gateway_pool.get(backend)
    if server is None or server.process.poll() is not None:
        server = gateway_pool["starter"](
            settings, env={"SLUICEGATE_PROVIDERS": str(providers_file), **MOCK_KEY_ENV}
        )
        gateway_pool[backend] = server
    return server


@pytest.fixture
async def proxy_client(
    settings: Settings, runtime: Runtime, provider_settings: ProviderSettings
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process over ASGI with the mock providers, for unit-level HTTP tests."""
    app = create_app(settings, runtime, provider_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", timeout=30
        ) as client:
            yield client
