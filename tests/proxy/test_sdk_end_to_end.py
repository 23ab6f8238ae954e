"""The official openai SDK against `sluicegate serve` (real uvicorn) and the mock upstream."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from sluicegate.mockupstream import tokens as mock_tokens
from sluicegate.providers.catalog import default_catalog
from sluicegate.runtime import Runtime
from tests.factories import Tenant
from tests.proxy.conftest import usage_events
from tests.support import ServerProcess

HELLO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world"},
]
HELLO_PROMPT_TOKENS = mock_tokens.chat_prompt_tokens(HELLO)
REPLY_TOKENS = mock_tokens.DEFAULT_COMPLETION_TOKENS


def sdk(gateway: ServerProcess, tenant: Tenant) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=tenant.key, max_retries=0)


def mock_requests(mock: ServerProcess) -> list[dict]:
    return httpx.get(mock.base_url + "/_mock/requests").json()["requests"]


async def test_chat_non_streaming_bills_the_catalog_price(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    completion = sdk(gateway, tenant).chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.choices[0].message.content.startswith("mock reply")
    assert completion.usage.prompt_tokens == HELLO_PROMPT_TOKENS
    assert completion.usage.completion_tokens == REPLY_TOKENS

    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    price = default_catalog()["gpt-4o-mini"].price
    assert event.cost_nusd == price.cost_nanos(HELLO_PROMPT_TOKENS, REPLY_TOKENS) > 0
    assert (event.prompt_tokens, event.completion_tokens) == (HELLO_PROMPT_TOKENS, REPLY_TOKENS)
    assert (event.status_code, event.stream, event.usage_estimated) == (200, False, False)
    assert (event.key_id, event.user_id, event.group_id) == (
        tenant.key_id,
        tenant.user_id,
        tenant.group_id,
    )
    assert event.provider == "mock-openai" and event.requested_model == "gpt-4o-mini"


async def test_stream_without_include_usage_hides_the_usage_chunk_but_bills_it(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    chunks = list(
        sdk(gateway, tenant).chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True
        )
    )
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert len(text.split()) == REPLY_TOKENS
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert (event.prompt_tokens, event.completion_tokens) == (HELLO_PROMPT_TOKENS, REPLY_TOKENS)
    assert event.stream and not event.usage_estimated and event.ttft_ms is not None


async def test_stream_with_include_usage_ends_with_the_usage_chunk(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    chunks = list(
        sdk(gateway, tenant).chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == HELLO_PROMPT_TOKENS
    assert chunks[-1].usage.completion_tokens == REPLY_TOKENS
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.completion_tokens == REPLY_TOKENS


def test_tool_call_round_trip(gateway: ServerProcess, tenant: Tenant) -> None:
    client = sdk(gateway, tenant)
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    messages: list[dict] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    second = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


def test_json_mode_n_and_extra_fields_reach_the_upstream_untouched(
    gateway: ServerProcess, tenant: Tenant, mock_upstream: ServerProcess
) -> None:
    httpx.delete(mock_upstream.base_url + "/_mock/requests")
    completion = sdk(gateway, tenant).chat.completions.create(
        model="gpt-4o-mini",
        messages=HELLO,
        n=2,
        response_format={"type": "json_object"},
        extra_body={"vendor_knob": {"depth": [1, 2.5, None]}, "seed": 7},
    )
    assert len(completion.choices) == 2
    assert json.loads(completion.choices[0].message.content)["mock"] is True
    (forwarded,) = [r for r in mock_requests(mock_upstream) if r["path"] == "/v1/chat/completions"]
    assert forwarded["body"]["vendor_knob"] == {"depth": [1, 2.5, None]}
    assert forwarded["body"]["seed"] == 7
    assert forwarded["headers"]["authorization"] == "Bearer mock-openai-key"
    assert tenant.key not in json.dumps(forwarded)


async def test_embeddings_and_models(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime
) -> None:
    client = sdk(gateway, tenant)
    result = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 3
    listed = {model.id for model in client.models.list()}
    assert {"gpt-4o-mini", "text-embedding-3-small", "claude-3-5-haiku", "azure-gpt"} <= listed
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.prompt_tokens == 3 and event.completion_tokens == 0


async def test_anthropic_model_through_the_openai_api(
    gateway: ServerProcess, tenant: Tenant, runtime: Runtime, mock_upstream: ServerProcess
) -> None:
    httpx.delete(mock_upstream.base_url + "/_mock/requests")
    client = sdk(gateway, tenant)
    completion = client.chat.completions.create(model="claude-3-5-haiku", messages=HELLO)
    assert completion.choices[0].message.content.startswith("mock reply")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == mock_tokens.anthropic_input_tokens(
        HELLO[1:], system=HELLO[0]["content"]
    )
    chunks = list(
        client.chat.completions.create(
            model="claude-3-5-haiku",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == REPLY_TOKENS
    assert chunks[-1].usage.completion_tokens == REPLY_TOKENS

    forwarded = [r for r in mock_requests(mock_upstream) if r["path"] == "/v1/messages"]
    assert len(forwarded) == 2
    assert forwarded[0]["body"]["system"] == "You are terse."
    assert forwarded[0]["body"]["model"] == "claude-3-5-haiku-20241022"
    assert forwarded[0]["headers"]["x-api-key"] == "anthropic-test-key"
    assert forwarded[0]["headers"]["anthropic-version"]
    events = await usage_events(runtime, tenant.org_id, expect=2)
    assert [e.completion_tokens for e in events] == [REPLY_TOKENS, REPLY_TOKENS]
    assert all(e.provider == "mock-anthropic" and e.cost_nusd > 0 for e in events)


def test_azure_deployment_url_and_key_header(
    gateway: ServerProcess, tenant: Tenant, mock_upstream: ServerProcess
) -> None:
    httpx.delete(mock_upstream.base_url + "/_mock/requests")
    completion = sdk(gateway, tenant).chat.completions.create(model="azure-gpt", messages=HELLO)
    assert completion.choices[0].message.content
    (forwarded,) = [r for r in mock_requests(mock_upstream) if r["path"].startswith("/openai/")]
    assert forwarded["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert "api-version=2024-10-21" in forwarded["query"]
    assert forwarded["headers"]["api-key"] == "azure-test-key"
    assert "authorization" not in forwarded["headers"]


@pytest.mark.parametrize("header", ["authorization", "api-key", "x-api-key"])
def test_plain_http_with_each_key_header_and_request_id(
    gateway: ServerProcess, tenant: Tenant, header: str
) -> None:
    value = f"Bearer {tenant.key}" if header == "authorization" else tenant.key
    response = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO},
        headers={header: value, "x-request-id": "client-trace-1"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "client-trace-1"
    assert response.json()["object"] == "chat.completion"
    assert tenant.key not in gateway.log()  # the secret never reaches the logs


async def test_legacy_completions(gateway: ServerProcess, tenant: Tenant, runtime: Runtime) -> None:
    result = sdk(gateway, tenant).completions.create(model="gpt-4o-mini", prompt="one two three")
    assert result.choices[0].text.startswith("mock")
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.prompt_tokens == 6
