"""Each failure mode of the mock upstream gives the documented answer, and the next request is
served normally."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr

from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter
from tests.factories import Tenant
from tests.outbound_proxy import connect_proxy
from tests.proxy.conftest import MOCK_KEY_ENV, usage_events
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


async def test_an_upstream_that_does_not_know_the_path_is_the_operators_502(
    gateway: ServerProcess, tenant: Tenant
) -> None:
    """A wrong base_url makes the upstream answer 404: the client's call was fine, so it is
    told the provider failed, and the operator finds a warning naming provider, model and
    status in the log."""
    error = assert_openai_error(post(gateway, tenant, "misplaced-model"), 502, None)
    assert error["type"] == "upstream_error"
    assert error["code"] == "upstream_misconfigured"
    assert "mock-misplaced" in error["message"] and "404" in error["message"]
    assert_still_serving(gateway, tenant)
    [line] = [
        orjson.loads(line)
        for line in gateway.log().splitlines()
        if line.startswith("{") and '"mock-misplaced"' in line
    ]
    assert line["level"] == "warning"
    assert (line["provider"], line["model"], line["upstream_status"]) == (
        "mock-misplaced",
        "gpt-4o-mini",
        404,
    )
    assert "/nowhere" not in line["message"]


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


async def test_a_connection_dropped_before_any_answer_is_retried_once(
    settings: Settings, runtime: Runtime, tenant: Tenant, tmp_path: Path
) -> None:
    """The first connection is closed without an answer (a stale keep-alive connection looks
    exactly like this); the gateway sends once more and serves the client."""
    import asyncio

    from sluicegate.app import create_app
    from sluicegate.providers.config import load_providers

    answer = orjson.dumps(
        {
            "id": "chatcmpl-x",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    )
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        await reader.readexactly(length)
        if connections > 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    providers = tmp_path / "flaky.yaml"
    providers.write_text(
        f"providers:\n  - name: flaky\n    type: openai\n    base_url: http://127.0.0.1:{port}/v1\n"
        "models:\n  - id: gpt-4o-mini\n    provider: flaky\n"
    )
    app = create_app(settings, runtime, load_providers(providers, {}))
    async with (
        server,
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
        ) as client,
    ):
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers={"authorization": f"Bearer {tenant.key}"},
        )
    assert response.status_code == 200, response.text
    assert connections == 2


@pytest.mark.parametrize(
    ("credentials", "status"),
    [(None, 200), ("Basic bm90LXRoZXNlLW9uZXM=", 502)],
    ids=["tunnelled", "tunnel-refused"],
)
async def test_calls_go_through_the_outbound_proxy_whose_refusal_is_a_502(
    settings: Settings,
    runtime: Runtime,
    tenant: Tenant,
    provider_settings: ProviderSettings,
    mock_upstream: ServerProcess,
    credentials: str | None,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With HTTP_PROXY set the gateway reaches the provider through a CONNECT tunnel; a proxy
    that will not open one (407: credentials it does not accept) is an unreachable provider,
    and the operator's log says what the proxy answered."""
    from sluicegate.app import create_app

    caplog.set_level(logging.WARNING, logger="sluicegate.proxy")
    async with connect_proxy(credentials=credentials) as proxy:
        proxied = settings.model_copy(update={"http_proxy": SecretStr(f"http://{proxy.address}")})
        app = create_app(proxied, runtime, provider_settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
            ) as client,
        ):
            response = await client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES},
                headers={"authorization": f"Bearer {tenant.key}"},
            )
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        error = assert_openai_error(response, 502, "upstream_unreachable")
        assert "407" not in error["message"]  # the proxy is the operator's business
        [warning] = [r.getMessage() for r in caplog.records if r.name == "sluicegate.proxy"]
        assert f"the outbound proxy http://{proxy.address} (HTTP_PROXY)" in warning
        assert "407 Proxy Authentication Required" in warning
    assert [connect.target for connect in proxy.seen] == [
        mock_upstream.base_url.removeprefix("http://")
    ]
