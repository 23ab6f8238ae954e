"""Each failure mode of the mock upstream gives the documented answer, and the next request is
served normally."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter
from tests.proxy.conftest import MOCK_KEY_ENV, Tenant, usage_events
from tests.support import ServerProcess

MESSAGES = [{"role": "user", "content": "hello there"}]


def post(gateway: ServerProcess, tenant: Tenant, model: str, **extra: object) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, **extra},
        headers={"authorization": f"Bearer {tenant.key}"},
        timeout=30,
    )


def assert_openai_error(response: httpx.Response, status: int, code: str | None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def assert_still_serving(gateway: ServerProcess, tenant: Tenant) -> None:
    assert post(gateway, tenant, "gpt-4o-mini").status_code == 200


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("mock-error-500", 502, "upstream_error"),
        ("mock-invalid-json", 502, "upstream_invalid_response"),
        ("mock-cut", 502, "upstream_unreachable"),
    ],
)
async def test_upstream_failures_map_to_gateway_errors(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime, model: str, status: int, code: str
) -> None:
    error = assert_openai_error(post(gateway, tenant, model), status, code)
    assert error["type"] == "upstream_error"
    assert "mock-openai" in error["message"]
    assert_still_serving(gateway, tenant)
    failed, succeeded = await usage_events(runtime, tenant.org_id, expect=2)
    assert (failed.status_code, failed.cost_nusd) == (status, 0)
    assert failed.error_type == code
    assert succeeded.status_code == 200


def test_upstream_rate_limit_passes_through_with_retry_after(
    gateway: ServerProcess, tenant: Tenant
) -> None:
    response = post(gateway, tenant, "mock-error-429")
    assert_openai_error(response, 429, None)
    assert response.headers["retry-after"] == "2"
    assert_still_serving(gateway, tenant)


async def test_missing_usage_is_estimated_and_marked(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    assert post(gateway, tenant, "mock-no-usage").status_code == 200
    streamed = post(gateway, tenant, "mock-no-usage", stream=True)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    plain, stream = await usage_events(runtime, tenant.org_id, expect=2)
    assert plain.usage_estimated and stream.usage_estimated
    assert plain.prompt_tokens > 0 and plain.cost_nusd > 0
    assert stream.completion_tokens > 0


async def test_stream_cut_mid_way_ends_with_an_error_event(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    response = post(gateway, tenant, "mock-cut", stream=True)
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "upstream_stream_cut"
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert len(events) >= 2  # what arrived before the cut was relayed
    assert_still_serving(gateway, tenant)
    cut, _ = await usage_events(runtime, tenant.org_id, expect=2)
    assert (cut.status_code, cut.error_type, cut.usage_estimated) == (
        502,
        "upstream_stream_cut",
        True,
    )
    assert cut.completion_tokens >= 1


def test_slow_upstream_within_the_timeout_is_served(gateway: ServerProcess, tenant: Tenant) -> None:
    response = post(gateway, tenant, "mock-slow")
    assert response.status_code == 200


@pytest.fixture
def impatient_gateway(
    start_gateway: GatewayStarter, settings: Settings, providers_file: Path
) -> ServerProcess:
    return start_gateway(
        settings,
        env={
            "SLUICEGATE_PROVIDERS": str(providers_file),
            "SLUICEGATE_UPSTREAM_READ_TIMEOUT": "0.5",
            **MOCK_KEY_ENV,
        },
    )


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(
    impatient_gateway: ServerProcess, tenant: Tenant, stream: bool
) -> None:
    response = post(impatient_gateway, tenant, "mock-slow", stream=stream)
    assert_openai_error(response, 504, "upstream_timeout")
    assert_still_serving(impatient_gateway, tenant)


def test_unreachable_provider_is_502(
    start_gateway: GatewayStarter, settings: Settings, tenant: Tenant, tmp_path: Path
) -> None:
    from tests.support import free_port

    providers = tmp_path / "dead.yaml"
    providers.write_text(
        f"providers:\n  - name: dead\n    type: openai\n    base_url: http://127.0.0.1:{free_port()}/v1\n"
        "models:\n  - id: gpt-4o-mini\n    provider: dead\n"
    )
    gateway = start_gateway(settings, env={"SLUICEGATE_PROVIDERS": str(providers)})
    assert_openai_error(post(gateway, tenant, "gpt-4o-mini"), 502, "upstream_unreachable")
