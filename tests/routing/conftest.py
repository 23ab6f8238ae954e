"""Fixtures of the routing tests: two mock upstreams (alpha and beta, each failing on command),
a providers file in which models are served by deployments on both, and the gateway in-process
with routing settings a test can read exactly (no backoff, a short failure count)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sluicegate.app import create_app
from sluicegate.providers.config import ProviderSettings, load_providers
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.factories import Tenant, make_tenant
from tests.support import ServerProcess, free_port, start_process

ALLOWED_FAILS = 2


def providers_yaml(alpha: str, beta: str) -> str:
    """alpha keeps every data policy and is cheap; beta keeps none and is dearer."""
    return f"""providers:
  - name: alpha
    type: openai
    base_url: {alpha}/v1
    api_key: alpha-key
    zdr: true
    no_training: true
    no_prompt_logging: true
    certifications: [soc2, gdpr]
    region: eu
  - name: beta
    type: openai
    base_url: {beta}/v1
    api_key: beta-key
    region: us
  - name: alpha-hasty
    type: openai
    base_url: {alpha}/v1
    api_key: alpha-key
    timeout_seconds: 1
models:
  - id: duo
    deployments:
      - provider: alpha
        upstream_model: gpt-4o-mini
        input_usd_per_mtok: 1
        output_usd_per_mtok: 2
      - provider: beta
        upstream_model: gpt-4o-mini
        input_usd_per_mtok: 3
        output_usd_per_mtok: 4
  - id: hasty
    deployments:
      - provider: alpha-hasty
        upstream_model: gpt-4o-mini
        input_usd_per_mtok: 1
        output_usd_per_mtok: 2
      - provider: beta
        upstream_model: gpt-4o-mini
        input_usd_per_mtok: 3
        output_usd_per_mtok: 4
  - id: cheap
    provider: alpha
    upstream_model: gpt-4o-mini
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
    max_output_tokens: 1000
    fallbacks: [dear]
  - id: dear
    provider: beta
    upstream_model: gpt-4o
    input_usd_per_mtok: 10
    output_usd_per_mtok: 20
    max_output_tokens: 1000
  - id: cheap-b
    provider: alpha
    upstream_model: gpt-4.1-mini
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
    max_output_tokens: 1000
    fallbacks: [dear]
  - id: beta-only
    provider: beta
    upstream_model: gpt-4o-mini
    input_usd_per_mtok: 3
    output_usd_per_mtok: 4
  - id: short-window
    provider: alpha
    upstream_model: gpt-4o-mini
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
    context_window: 1000
    context_window_fallbacks: [long-window]
  - id: long-window
    provider: beta
    upstream_model: gpt-4.1-mini
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
    context_window: 1000000
"""


class Mock:
    """One mock upstream and its control API (src/sluicegate/mockupstream/control.py)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.url = server.base_url

    def fail(self, behavior: str, **rule: Any) -> None:
        answer = httpx.put(f"{self.url}/_mock/behavior", json={"behavior": behavior, **rule})
        assert answer.status_code == 200, answer.text

    def heal(self) -> None:
        httpx.delete(f"{self.url}/_mock/behavior").raise_for_status()

    def stats(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/_mock/stats")
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    @property
    def requests(self) -> int:
        return int(self.stats()["requests"])

    def reset(self) -> None:
        self.heal()
        httpx.delete(f"{self.url}/_mock/stats").raise_for_status()


def _start(tmp: pytest.TempPathFactory, name: str) -> ServerProcess:
    port = free_port()
    return start_process(
        ["sluicegate.mockupstream", "--port", str(port)],
        port=port,
        log_path=tmp.mktemp(name) / "mock.log",
        ready_path="/health",
    )


@pytest.fixture(scope="session")
def mock_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Mock]]:
    alpha, beta = _start(tmp_path_factory, "alpha"), _start(tmp_path_factory, "beta")
    yield Mock(alpha), Mock(beta)
    alpha.stop()
    beta.stop()


@pytest.fixture
def alpha(mock_pair: tuple[Mock, Mock]) -> Mock:
    mock_pair[0].reset()
    return mock_pair[0]


@pytest.fixture
def beta(mock_pair: tuple[Mock, Mock]) -> Mock:
    mock_pair[1].reset()
    return mock_pair[1]


@pytest.fixture(scope="session")
def routing_providers_file(
    mock_pair: tuple[Mock, Mock], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("routing") / "providers.yaml"
    path.write_text(providers_yaml(mock_pair[0].url, mock_pair[1].url))
    return path


@pytest.fixture(scope="session")
def routing_providers(routing_providers_file: Path) -> ProviderSettings:
    return load_providers(routing_providers_file, {})


@pytest.fixture
def routing_settings(settings: Settings) -> Iterator[Settings]:
    """No backoff (nothing to wait for), a cooldown longer than any test: what the tests count
    does not depend on how fast the machine is."""
    forget_health(settings)
    yield settings.model_copy(
        update={
            "routing_retry_backoff_ms": 0,
            "routing_allowed_fails": ALLOWED_FAILS,
            "routing_cooldown_seconds": 3600.0,
        }
    )
    forget_health(settings)


def forget_health(settings: Settings) -> None:
    """Deployment health lives in Redis under the session's prefix, as long as a cooldown or a
    failure window lasts: each test starts with every deployment healthy."""
    if settings.redis_url is None:
        return
    client = redis.Redis.from_url(settings.redis_url)
    try:
        for key in client.scan_iter(match=f"{settings.redis_prefix}:routing:*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture
async def routed(
    routing_settings: Settings,
    runtime: Runtime,
    routing_providers: ProviderSettings,
    alpha: Mock,
    beta: Mock,
) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process over ASGI, routing between alpha and beta."""
    app = create_app(routing_settings, runtime, routing_providers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway.test", timeout=30
        ) as client:
            yield client


@pytest.fixture
async def tenant(runtime: Runtime) -> Tenant:
    return await make_tenant(runtime)
