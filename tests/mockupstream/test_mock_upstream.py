"""End-to-end tests of the mock upstream over real HTTP, with httpx and the official openai SDK."""

from __future__ import annotations

import base64
import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from sluicegate.mockupstream import tokens as tk
from tests.support import ServerProcess

HELLO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the world"},
]
HELLO_PROMPT = 3 + (4 + 3) + (4 + 5)
WEATHER_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


@pytest.fixture(scope="module")
def server(mock_upstream: ServerProcess) -> ServerProcess:
    """The session's mock upstream (tests/conftest.py), started once for every test module."""
    return mock_upstream


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def sdk(server: ServerProcess) -> Iterator[openai.OpenAI]:
    # No retries: the failure modes must surface at once instead of being retried for seconds.
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
    yield client
    client.close()


def _sse_data(text: str) -> list[Any]:
    return [
        line[len("data: ") :] if line == "data: [DONE]" else json.loads(line[len("data: ") :])
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


def _anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


# --- token rules ------------------------------------------------------------------------------


def test_token_rules_are_documented_arithmetic() -> None:
    assert tk.words("  a b\tc\n") == 3
    assert tk.chat_prompt_tokens(HELLO) == HELLO_PROMPT
    parts = {
        "role": "user",
        "content": [
            {"type": "text", "text": "two words"},
            {"type": "image_url", "image_url": {"url": "data:,"}},
            {"type": "text", "text": "three more words"},
        ],
    }
    assert tk.message_text(parts) == "two words three more words"
    assert tk.message_tokens(parts) == 4 + 5 + tk.IMAGE_TOKENS
    calls = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"arguments": '{"a": 1}'}}],
    }
    assert tk.message_tokens(calls) == 4 + 2
    tool_use = {"role": "assistant", "content": [{"type": "tool_use", "input": {"mock": True}}]}
    assert tk.anthropic_input_tokens([tool_use], system="be brief") == 3 + (4 + 2) + (4 + 2)
    assert tk.completion_length() == tk.DEFAULT_COMPLETION_TOKENS == 16
    assert tk.completion_length(5) == 5 and tk.is_truncated(5)
    assert tk.completion_length(100, override=40) == 40 and not tk.is_truncated(100, 40)
    assert tk.completion_length(10, override=40) == 10 and tk.is_truncated(10, 40)
    assert tk.reply_text(4) == "mock reply word3 word4" and tk.reply_text(0) == ""
    assert tk.legacy_prompt_tokens("one two") == 5 and tk.legacy_prompt_tokens([1, 2, 3]) == 6
    assert tk.embedding_input_tokens([7, 8]) == 2
    assert tk.cached_tokens(None, 9) == 0 and tk.cached_tokens(50, 9) == 9


# --- plain routes -----------------------------------------------------------------------------


def test_health_and_models(http: httpx.Client, sdk: openai.OpenAI) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    listing = http.get("/v1/models").json()
    assert listing["object"] == "list"
    assert listing["data"][0] == {
        "id": "gpt-4o-mini",
        "object": "model",
        "created": 1700000000,
        "owned_by": "mock",
    }
    ids = [m.id for m in sdk.models.list()]
    assert ids == [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "text-embedding-3-small",
        "claude-3-5-haiku-latest",
        "mock-model",
    ]
    assert sdk.models.retrieve("anything").id == "anything"


def test_unknown_route_and_malformed_json(http: httpx.Client) -> None:
    missing = http.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert missing.json()["error"]["param"] is None
    broken = http.post("/v1/chat/completions", content=b"{not json")
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "invalid_request_error"
    anthropic = http.post("/v1/messages", content=b"[")
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"
    bad_behavior = http.post(
        "/v1/chat/completions", json={"messages": []}, headers={"x-mock-behavior": "explode"}
    )
    assert bad_behavior.status_code == 400


# --- OpenAI chat ------------------------------------------------------------------------------


def test_chat_plain_with_sdk(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert resp.object == "chat.completion" and resp.id.startswith("chatcmpl-")
    assert resp.model == "gpt-4o-mini" and resp.system_fingerprint == "fp_mock"
    choice = resp.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == tk.reply_text(16)
    assert choice.message.content.startswith("mock ")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == HELLO_PROMPT
    assert resp.usage.completion_tokens == 16
    assert resp.usage.total_tokens == HELLO_PROMPT + 16


def test_chat_max_tokens_and_token_override(sdk: openai.OpenAI) -> None:
    short = sdk.chat.completions.create(model="m", messages=HELLO, max_tokens=5)
    assert short.choices[0].finish_reason == "length"
    assert short.choices[0].message.content == "mock reply word3 word4 word5"
    assert short.usage is not None and short.usage.completion_tokens == 5
    big = sdk.chat.completions.create(
        model="m", messages=HELLO, extra_headers={"x-mock-completion-tokens": "40"}
    )
    assert big.usage is not None and big.usage.completion_tokens == 40
    assert big.choices[0].finish_reason == "stop"
    capped = sdk.chat.completions.create(
        model="m",
        messages=HELLO,
        max_completion_tokens=10,
        extra_headers={"x-mock-completion-tokens": "40"},
    )
    assert capped.usage is not None and capped.usage.completion_tokens == 10
    assert capped.choices[0].finish_reason == "length"


def test_chat_cached_tokens_and_image_parts(sdk: openai.OpenAI) -> None:
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        }
    ]
    resp = sdk.chat.completions.create(
        model="m", messages=messages, extra_headers={"x-mock-cached-tokens": "50"}
    )
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 3 + 4 + 3 + 85 == tk.chat_prompt_tokens(messages)
    assert resp.usage.prompt_tokens_details is not None
    assert resp.usage.prompt_tokens_details.cached_tokens == 50


def test_chat_n2(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(model="m", messages=HELLO, n=2, max_tokens=4)
    assert [c.index for c in resp.choices] == [0, 1]
    assert {c.message.content for c in resp.choices} == {tk.reply_text(4)}
    assert resp.usage is not None and resp.usage.completion_tokens == 8


def test_chat_stream_without_usage(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.usage is None for c in chunks)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == tk.reply_text(16)
    assert len(chunks) == 1 + 16 + 1
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_with_usage_raw_wire(http: httpx.Client) -> None:
    body = {
        "model": "m",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 3,
        "unknown_extra_field": {"kept": True},
    }
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _sse_data(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" in c for c in chunks)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == tk.chat_usage(HELLO_PROMPT, 3)
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:4]] == [
        "mock",
        " reply",
        " word3",
    ]


def test_chat_stream_n2_sdk_with_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="m",
        messages=HELLO,
        n=2,
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: tk.reply_text(3), 1: tk.reply_text(3)}
    assert usage is not None and usage.completion_tokens == 6


def test_chat_tools(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(model="m", messages=HELLO, tools=WEATHER_TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_mock_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"mock": True}
    forced = sdk.chat.completions.create(
        model="m",
        messages=HELLO,
        tools=WEATHER_TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert forced.choices[0].message.tool_calls[0].function.name == "get_time"
    disabled = sdk.chat.completions.create(
        model="m", messages=HELLO, tools=WEATHER_TOOLS, tool_choice="none"
    )
    assert disabled.choices[0].message.content == tk.reply_text(16)
    follow_up: list[Any] = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answered = sdk.chat.completions.create(model="m", messages=follow_up, tools=WEATHER_TOOLS)
    assert answered.choices[0].finish_reason == "stop"
    assert answered.usage is not None
    assert answered.usage.prompt_tokens == tk.chat_prompt_tokens(follow_up)


def test_chat_tools_streaming(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(model="m", messages=HELLO, tools=WEATHER_TOOLS, stream=True)
    )
    first = chunks[0].choices[0].delta.tool_calls
    assert first is not None and first[0].id and first[0].function is not None
    assert first[0].function.name == "get_weather" and first[0].function.arguments == ""
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments
        for c in chunks[1:]
        if c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"mock": True}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_chat_json_mode(sdk: openai.OpenAI) -> None:
    for fmt in (
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    ):
        resp = sdk.chat.completions.create(model="m", messages=HELLO, response_format=fmt)
        assert json.loads(resp.choices[0].message.content or "") == {"mock": True, "words": 16}
        assert resp.usage is not None and resp.usage.completion_tokens == 16
    streamed = sdk.chat.completions.create(
        model="m", messages=HELLO, response_format={"type": "json_object"}, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert json.loads(text) == {"mock": True, "words": 16}


# --- legacy completions, embeddings, Azure -----------------------------------------------------


def test_legacy_completions(sdk: openai.OpenAI) -> None:
    resp = sdk.completions.create(model="m", prompt=["one two", "three"], max_tokens=4)
    assert resp.object == "text_completion"
    assert [c.text for c in resp.choices] == [tk.reply_text(4)] * 2
    assert [c.finish_reason for c in resp.choices] == ["length", "length"]
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == (3 + 2) + (3 + 1)
    assert resp.usage.completion_tokens == 8
    stream = sdk.completions.create(
        model="m", prompt="hi", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == tk.reply_text(16)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 4


def test_embeddings_sdk_base64_default_matches_float(
    sdk: openai.OpenAI, http: httpx.Client
) -> None:
    resp = sdk.embeddings.create(model="text-embedding-3-small", input=["hello world", "x"])
    assert [len(d.embedding) for d in resp.data] == [8, 8]
    assert all(-1.0 <= v <= 1.0 for d in resp.data for v in d.embedding)
    assert resp.usage.prompt_tokens == 3 and resp.usage.total_tokens == 3
    floats = http.post(
        "/v1/embeddings",
        json={"model": "e", "input": ["hello world", "x"], "encoding_format": "float"},
    ).json()
    assert [list(d.embedding) for d in resp.data] == [d["embedding"] for d in floats["data"]]
    raw = http.post(
        "/v1/embeddings", json={"model": "e", "input": "x", "encoding_format": "base64"}
    ).json()
    decoded = list(struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"])))
    assert decoded == floats["data"][1]["embedding"]
    sized = sdk.embeddings.create(model="e", input=[[1, 2, 3], [4]], dimensions=32)
    assert [len(d.embedding) for d in sized.data] == [32, 32]
    assert sized.usage.prompt_tokens == 4
    assert sized.data[0].embedding != sized.data[1].embedding


def test_azure_deployment_paths(http: httpx.Client) -> None:
    http.delete("/_mock/requests")
    chat = http.post(
        "/openai/deployments/my-dep/chat/completions?api-version=2024-06-01",
        json={"messages": HELLO},
        headers={"api-key": "azure-secret"},
    )
    assert chat.status_code == 200 and chat.json()["model"] == "my-dep"
    emb = http.post("/openai/deployments/emb-dep/embeddings", json={"input": "a b c"})
    assert emb.json()["usage"]["prompt_tokens"] == 3
    logged = http.get("/_mock/requests").json()["requests"]
    assert logged[0]["path"] == "/openai/deployments/my-dep/chat/completions"
    assert logged[0]["query"] == "api-version=2024-06-01"
    assert logged[0]["headers"]["api-key"] == "azure-secret"


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_messages_plain_and_tools(http: httpx.Client) -> None:
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    }
    msg = http.post("/v1/messages", json=body, headers={"x-mock-cached-tokens": "5"}).json()
    assert msg["id"].startswith("msg_") and msg["type"] == "message"
    assert msg["role"] == "assistant" and msg["model"] == "claude-3-5-haiku-latest"
    assert msg["content"] == [{"type": "text", "text": tk.reply_text(16)}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None
    total = tk.anthropic_input_tokens(body["messages"], body["system"])
    assert total == 3 + (4 + 2) + (4 + 2)
    assert msg["usage"] == {
        "input_tokens": total - 5,
        "output_tokens": 16,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
    }
    short = http.post("/v1/messages", json={**body, "max_tokens": 2}).json()
    assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 2
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    used = http.post("/v1/messages", json={**body, "tools": tools}).json()
    assert used["stop_reason"] == "tool_use"
    block = used["content"][0]
    assert block["type"] == "tool_use" and block["name"] == "lookup"
    assert block["input"] == {"mock": True} and block["id"].startswith("toolu_")
    result_turn = [
        *body["messages"],
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"]}]},
    ]
    after = http.post("/v1/messages", json={**body, "tools": tools, "messages": result_turn})
    assert after.json()["stop_reason"] == "end_turn"


def test_anthropic_streaming(http: httpx.Client) -> None:
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 4,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    resp = http.post("/v1/messages", json=body)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = _anthropic_events(resp.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"]["input_tokens"] == 3 + 4 + 1 and start["usage"]["output_tokens"] == 1
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == tk.reply_text(4)
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    }
    tools = [{"name": "lookup", "input_schema": {"type": "object"}}]
    tool_events = _anthropic_events(http.post("/v1/messages", json={**body, "tools": tools}).text)
    assert tool_events[1][1]["content_block"]["type"] == "tool_use"
    partial = "".join(
        d["delta"]["partial_json"] for n, d in tool_events if n == "content_block_delta"
    )
    assert json.loads(partial) == {"mock": True}
    assert tool_events[-2][1]["delta"]["stop_reason"] == "tool_use"


# --- failure modes ----------------------------------------------------------------------------

ENDPOINTS = {
    "chat": ("/v1/chat/completions", {"model": "m", "messages": HELLO}),
    "completions": ("/v1/completions", {"model": "m", "prompt": "hi"}),
    "embeddings": ("/v1/embeddings", {"model": "m", "input": "hi"}),
    "messages": ("/v1/messages", {"model": "m", "max_tokens": 8, "messages": HELLO[1:]}),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_error_modes(http: httpx.Client, endpoint: str) -> None:
    path, body = ENDPOINTS[endpoint]
    by_model = http.post(path, json={**body, "model": "mock-error-500"})
    by_header = http.post(path, json=body, headers={"x-mock-behavior": "error-500"})
    limited = http.post(
        path, json={**body, "model": "mock-error-429"}, headers={"x-mock-retry-after": "7"}
    )
    assert by_model.status_code == by_header.status_code == 500
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    default_retry = http.post(path, json=body, headers={"x-mock-behavior": "error-429"})
    assert default_retry.headers["retry-after"] == "2"
    if endpoint == "messages":
        assert by_model.json() == {
            "type": "error",
            "error": {"type": "api_error", "message": by_model.json()["error"]["message"]},
        }
        assert limited.json()["error"]["type"] == "rate_limit_error"
    else:
        assert by_model.json()["error"]["type"] == "server_error"
        assert limited.json()["error"]["type"] == "rate_limit_error"
    broken = http.post(path, json=body, headers={"x-mock-behavior": "invalid-json"})
    assert broken.status_code == 200
    assert broken.headers["content-type"] == "application/json"
    assert broken.content == b'{"id": "chatcmpl-broken", "choices": ['
    # The header wins over the model name in both directions.
    normal = http.post(
        path, json={**body, "model": "mock-error-500"}, headers={"x-mock-behavior": "normal"}
    )
    assert normal.status_code == 200


def test_sdk_sees_errors(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="mock-error-500", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="mock-error-429", messages=HELLO)
    assert info.value.response.headers["retry-after"] == "2"


def test_slow_delays_first_byte(http: httpx.Client) -> None:
    started = time.monotonic()
    resp = http.post(
        "/v1/chat/completions",
        json={"model": "mock-slow", "messages": HELLO},
        headers={"x-mock-delay-ms": "200"},
    )
    elapsed = time.monotonic() - started
    assert resp.status_code == 200 and resp.json()["usage"]["completion_tokens"] == 16
    assert 0.2 <= elapsed < 1.5
    started = time.monotonic()
    with http.stream(
        "POST",
        "/v1/messages",
        json={**ENDPOINTS["messages"][1], "stream": True},
        headers={"x-mock-behavior": "slow", "x-mock-delay-ms": "200"},
    ) as stream:
        assert time.monotonic() - started >= 0.2
        assert stream.status_code == 200
        stream.read()
    # x-mock-stream-delay-ms spaces the chunks: 3 words make 6 chunks, so 5 pauses, and the
    # client must see the first chunk well before the last.
    arrivals: list[tuple[float, str]] = []
    with http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "m", "messages": HELLO, "stream": True, "max_tokens": 3},
        headers={"x-mock-stream-delay-ms": "40"},
    ) as paced:
        for line in paced.iter_lines():
            if line:
                arrivals.append((time.monotonic(), line))
    assert len(arrivals) == 6 and arrivals[-1][1] == "data: [DONE]"
    assert arrivals[-1][0] - arrivals[0][0] >= 0.15


@pytest.mark.parametrize(
    ("endpoint", "streaming"),
    [(e, s) for e in ENDPOINTS for s in (False, True) if not (s and e == "embeddings")],
)
def test_cut_drops_the_connection(server: ServerProcess, endpoint: str, streaming: bool) -> None:
    path, body = ENDPOINTS[endpoint]
    received = b""
    # A fresh client: the dropped connection must not leak into the shared keep-alive pool.
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream(
                "POST", path, json={**body, "model": "mock-cut", "stream": streaming}
            ) as resp:
                assert resp.status_code == 200
                for part in resp.iter_bytes():
                    received += part
    assert received
    if streaming and endpoint != "messages":
        events = _sse_data(received.decode())
        assert "[DONE]" not in events
        assert len(events) >= 2
    if streaming and endpoint == "messages":
        assert b"message_stop" not in received


def test_sdk_sees_cuts_and_invalid_json(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="m", messages=HELLO, stream=True, extra_headers={"x-mock-behavior": "cut"}
    )
    seen: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "mock reply"
    with pytest.raises(openai.APIConnectionError):
        sdk.chat.completions.create(model="mock-cut", messages=HELLO)
    with pytest.raises(ValueError):
        sdk.chat.completions.create(model="mock-invalid-json", messages=HELLO)


def test_no_usage(http: httpx.Client, sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(model="mock-no-usage", messages=HELLO)
    assert resp.usage is None and resp.choices[0].message.content == tk.reply_text(16)
    for path, body in ENDPOINTS.values():
        plain = http.post(path, json=body, headers={"x-mock-behavior": "no-usage"}).json()
        assert "usage" not in plain
    stream_body = {
        **ENDPOINTS["chat"][1],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    text = http.post(
        "/v1/chat/completions", json=stream_body, headers={"x-mock-behavior": "no-usage"}
    ).text
    chunks = _sse_data(text)[:-1]
    assert all("usage" not in c for c in chunks) and all(c["choices"] for c in chunks)
    anthropic = http.post(
        "/v1/messages",
        json={**ENDPOINTS["messages"][1], "stream": True},
        headers={"x-mock-behavior": "no-usage"},
    ).text
    assert "usage" not in anthropic


# --- request log ------------------------------------------------------------------------------


def test_request_log(http: httpx.Client) -> None:
    assert http.delete("/_mock/requests").status_code == 200
    assert http.get("/_mock/requests").json() == {"requests": []}
    http.post(
        "/v1/chat/completions?trace=1",
        json={"model": "m", "messages": HELLO, "x_vendor_field": [1, 2]},
        headers={"Authorization": "Bearer sk-upstream", "X-Custom": "yes"},
    )
    http.post("/v1/chat/completions", content=b"{oops")
    http.get("/health")
    logged = http.get("/_mock/requests").json()["requests"]
    assert len(logged) == 2
    first = logged[0]
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["query"] == "trace=1"
    assert first["headers"]["authorization"] == "Bearer sk-upstream"
    assert first["headers"]["x-custom"] == "yes"
    assert first["body"]["x_vendor_field"] == [1, 2]
    assert logged[1]["body"] is None
    for i in range(205):
        http.get(f"/nowhere/{i}")
    logged = http.get("/_mock/requests").json()["requests"]
    assert len(logged) == 200
    assert logged[0]["path"] == "/nowhere/5" and logged[-1]["path"] == "/nowhere/204"
    http.delete("/_mock/requests")
    assert http.get("/_mock/requests").json()["requests"] == []


def test_server_log_has_no_tracebacks(server: ServerProcess) -> None:
    # Deliberate cuts earlier in this module must not show up as server errors.
    assert "Traceback" not in server.log_path.read_text()


def test_cli_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sluicegate.mockupstream", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=15,
    ).stdout
    assert "--host" in out and "--port" in out
