"""The mock upstream programmed over /_mock/behavior and counted by /_mock/stats, over real HTTP.

The rules are server-wide, so this module starts a mock of its own rather than program the
session's shared one under other modules' feet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import ServerProcess, free_port, start_process

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Say hello"}]
ENDPOINTS = {
    "chat": (CHAT, {"model": "m", "messages": HELLO}),
    "completions": ("/v1/completions", {"model": "m", "prompt": "hi"}),
    "embeddings": ("/v1/embeddings", {"model": "m", "input": "hi"}),
    "messages": ("/v1/messages", {"model": "m", "max_tokens": 8, "messages": HELLO}),
    "azure": ("/openai/deployments/m/chat/completions", {"messages": HELLO}),
}
CONTEXT_ERROR = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 128001 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log: Path = tmp_path_factory.mktemp("mock-control") / "mock.log"
    process = start_process(
        ["sluicegate.mockupstream", "--port", str(port)],
        port=port,
        log_path=log,
        ready_path="/health",
    )
    yield process
    process.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    """A client on a mock with no rule programmed and its counters at zero."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        client.delete("/_mock/behavior").raise_for_status()
        client.delete("/_mock/stats").raise_for_status()
        yield client
        client.delete("/_mock/behavior")


def program(http: httpx.Client, **rule: Any) -> dict[str, Any]:
    resp = http.put("/_mock/behavior", json=rule)
    assert resp.status_code == 200, resp.text
    created: dict[str, Any] = resp.json()["rule"]
    return created


def rules(http: httpx.Client) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = http.get("/_mock/behavior").json()["rules"]
    return listed


def chat(http: httpx.Client, model: str = "m", **headers: str) -> httpx.Response:
    return http.post(CHAT, json={"model": model, "messages": HELLO}, headers=headers)


# --- programmed rules -------------------------------------------------------------------------


def test_times_fails_exactly_n_requests_then_answers_normally(http: httpx.Client) -> None:
    rule = program(http, behavior="error-500", times=3)
    assert rule == {
        "id": rule["id"],
        "behavior": "error-500",
        "model": None,
        "times": 3,
        "remaining": 3,
        "retry_after": None,
        "delay_ms": None,
        "status": 500,
    }
    assert chat(http).status_code == 500
    assert rules(http)[0]["remaining"] == 2
    assert [chat(http).status_code for _ in range(4)] == [500, 500, 200, 200]
    assert rules(http) == []


def test_a_rule_without_times_lasts_until_cleared(http: httpx.Client) -> None:
    program(http, behavior="error-429", retry_after=5)
    for _ in range(3):
        limited = chat(http)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "5"
        assert limited.json()["error"]["type"] == "rate_limit_error"
    assert rules(http)[0]["remaining"] is None
    assert http.delete("/_mock/behavior").json() == {"cleared": 1}
    assert rules(http) == []
    assert chat(http).status_code == 200


def test_model_rule_wins_over_global_and_the_most_recent_wins_among_equals(
    http: httpx.Client,
) -> None:
    program(http, behavior="error-500")
    program(http, behavior="error-503")  # more recent: wins among rules for every model
    program(http, behavior="error-429", model="a")
    program(http, behavior="normal", model="healthy")
    assert [r["behavior"] for r in rules(http)] == ["normal", "error-429", "error-503", "error-500"]
    assert chat(http, "a").status_code == 429
    assert chat(http, "b").status_code == 503
    assert chat(http, "healthy").status_code == 200
    # A rule for another model is no match, even when more recent than the global one.
    program(http, behavior="error-context", model="c")
    assert chat(http, "b").status_code == 503


def test_a_model_rule_with_times_hands_back_to_the_global_rule(http: httpx.Client) -> None:
    program(http, behavior="error-500")
    program(http, behavior="normal", model="probe", times=1)
    assert chat(http, "probe").status_code == 200
    assert chat(http, "probe").status_code == 500
    assert chat(http, "other").status_code == 500


def test_model_rules_match_azure_deployments_and_anthropic_models(http: httpx.Client) -> None:
    program(http, behavior="error-500", model="my-deployment")
    program(http, behavior="error-503", model="claude-x")
    azure = http.post("/openai/deployments/my-deployment/embeddings", json={"input": "hi"})
    assert azure.status_code == 500 and azure.json()["error"]["type"] == "server_error"
    anthropic = http.post(
        "/v1/messages", json={"model": "claude-x", "max_tokens": 8, "messages": HELLO}
    )
    assert anthropic.status_code == 503 and anthropic.headers["retry-after"] == "2"
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": anthropic.json()["error"]["message"]},
    }
    assert http.post("/openai/deployments/fine/embeddings", json={"input": "hi"}).is_success


def test_a_request_header_wins_over_a_rule_and_leaves_its_count(http: httpx.Client) -> None:
    program(http, behavior="error-500", times=1)
    assert chat(http, **{"x-mock-behavior": "normal"}).status_code == 200
    assert chat(http, **{"x-mock-behavior": "error-429"}).status_code == 429
    # A "mock-<behavior>" model chooses for itself as well.
    assert chat(http, "mock-no-usage").status_code == 200
    assert rules(http)[0]["remaining"] == 1
    assert chat(http).status_code == 500
    assert chat(http).status_code == 200


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_route_answers_a_programmed_error_before_any_stream_byte(
    http: httpx.Client, endpoint: str
) -> None:
    path, body = ENDPOINTS[endpoint]
    program(http, behavior="error", status=502, retry_after="9")
    for stream in (False, True):
        resp = http.post(path, json={**body, "stream": stream})
        assert resp.status_code == 502 and resp.headers["retry-after"] == "9"
        assert resp.headers["content-type"] == "application/json"
        if endpoint == "messages":
            assert resp.json()["type"] == "error"
            assert resp.json()["error"]["type"] == "api_error"
        else:
            assert resp.json()["error"]["type"] == "server_error"
            assert resp.json()["error"]["param"] is None


def test_programmed_slow_cut_invalid_json_and_no_usage(http: httpx.Client) -> None:
    program(http, behavior="slow", delay_ms=300, times=1)
    started = time.monotonic()
    assert chat(http).status_code == 200
    assert time.monotonic() - started >= 0.3
    program(http, behavior="invalid-json", times=1)
    assert chat(http).content == b'{"id": "chatcmpl-broken", "choices": ['
    program(http, behavior="no-usage", times=1)
    assert "usage" not in chat(http).json()
    program(http, behavior="cut", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.Client(base_url=str(http.base_url)) as fresh:
            fresh.post(CHAT, json={"model": "m", "messages": HELLO})
    assert chat(http).json()["usage"]["completion_tokens"] == 16
    assert rules(http) == []


def test_a_rule_that_cannot_be_is_refused_with_the_field_to_fix(http: httpx.Client) -> None:
    refused = {
        "behavior": {"behavior": "explode"},
        "times": {"behavior": "error-500", "times": 0},
        "model": {"behavior": "error-500", "model": ""},
        "delay_ms": {"behavior": "error-500", "delay_ms": 10},
        "status": {"behavior": "error", "status": 302},
        "retry_after": {"behavior": "error-429", "retry_after": "2\r\nx: y"},
        "colour": {"behavior": "error-500", "colour": "red"},
    }
    for field, rule in refused.items():
        resp = http.put("/_mock/behavior", json=rule)
        assert resp.status_code == 400, rule
        error = resp.json()["error"]
        assert error["param"] == field and error["code"] == "invalid_rule"
        assert field in error["message"]
    for raw in (b"{oops", b"[]", b""):
        assert http.put("/_mock/behavior", content=raw).status_code == 400
    assert rules(http) == []
    assert http.post("/_mock/behavior", json={"behavior": "cut"}).status_code == 404


# --- new error behaviours, per request and programmed -----------------------------------------


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_error_503_and_context_window_per_request(http: httpx.Client, endpoint: str) -> None:
    path, body = ENDPOINTS[endpoint]
    overloaded = http.post(path, json=body, headers={"x-mock-behavior": "error-503"})
    assert overloaded.status_code == 503 and overloaded.headers["retry-after"] == "2"
    later = http.post(
        path, json=body, headers={"x-mock-behavior": "error-503", "x-mock-retry-after": "30"}
    )
    assert later.headers["retry-after"] == "30"
    context = http.post(path, json=body, headers={"x-mock-behavior": "error-context"})
    assert context.status_code == 400 and "retry-after" not in context.headers
    generic = http.post(
        path, json=body, headers={"x-mock-behavior": "error", "x-mock-status": "404"}
    )
    assert generic.status_code == 404 and "retry-after" not in generic.headers
    if endpoint == "messages":
        assert overloaded.json()["error"]["type"] == "overloaded_error"
        assert context.json() == {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 200001 tokens > 200000 maximum",
            },
        }
        assert generic.json()["error"]["type"] == "not_found_error"
        return
    assert overloaded.json()["error"]["type"] == "server_error"
    expected_param = {"completions": "prompt", "embeddings": "input"}.get(endpoint, "messages")
    assert context.json() == {"error": {**CONTEXT_ERROR["error"], "param": expected_param}}
    assert generic.json()["error"]["type"] == "invalid_request_error"


def test_context_window_error_by_model_name_and_by_rule(http: httpx.Client) -> None:
    assert chat(http, "mock-error-context").json() == CONTEXT_ERROR
    program(http, behavior="error-context", model="small", times=1)
    context = chat(http, "small")
    assert context.status_code == 400 and context.json() == CONTEXT_ERROR
    assert chat(http, "mock-error", **{"x-mock-status": "418"}).status_code == 418
    assert chat(http, **{"x-mock-behavior": "error"}).status_code == 500
    bad_status = chat(http, **{"x-mock-behavior": "error", "x-mock-status": "200"})
    assert bad_status.status_code == 400
    assert "x-mock-status" in bad_status.json()["error"]["message"]


# --- counters ---------------------------------------------------------------------------------


def test_stats_count_requests_by_model_and_status_until_cleared(http: httpx.Client) -> None:
    program(http, behavior="error-500", model="down")
    chat(http, "up")
    chat(http, "up")
    chat(http, "down")
    http.post("/openai/deployments/dep/embeddings", json={"input": "hi"})
    http.get("/v1/models")
    http.get("/nowhere")
    http.post(CHAT, content=b"{oops")
    # Neither the health check nor the control routes are counted.
    http.get("/health")
    http.get("/_mock/requests")
    assert http.get("/_mock/stats").json() == {
        "requests": 7,
        "by_model": {"up": 2, "down": 1, "dep": 1},
        "by_status": {"200": 4, "400": 1, "404": 1, "500": 1},
    }
    assert http.delete("/_mock/stats").json() == {"cleared": 7}
    assert http.get("/_mock/stats").json() == {"requests": 0, "by_model": {}, "by_status": {}}


def test_stats_count_a_deliberate_cut_as_the_200_it_began(http: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.Client(base_url=str(http.base_url)) as fresh:
            fresh.post(CHAT, json={"model": "mock-cut", "messages": HELLO, "stream": True})
    assert http.get("/_mock/stats").json()["by_status"] == {"200": 1}


# --- concurrency ------------------------------------------------------------------------------


async def test_times_is_exact_under_concurrency(server: ServerProcess) -> None:
    concurrent = 80
    limits = httpx.Limits(max_connections=concurrent)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=20, limits=limits) as client:
        (await client.delete("/_mock/behavior")).raise_for_status()
        (await client.delete("/_mock/stats")).raise_for_status()
        rule = {"behavior": "error-503", "times": 17}
        (await client.put("/_mock/behavior", json=rule)).raise_for_status()
        scoped = {"behavior": "error-429", "times": 5, "model": "scoped"}
        (await client.put("/_mock/behavior", json=scoped)).raise_for_status()

        async def call(i: int) -> int:
            # Streams, paced, stay in flight while the others arrive.
            body = {"model": "scoped" if i % 4 == 0 else "m", "messages": HELLO}
            if i % 2:
                body["stream"] = True
            resp = await client.post(CHAT, json=body, headers={"x-mock-stream-delay-ms": "20"})
            return resp.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(concurrent)))
        assert statuses.count(503) == 17
        assert statuses.count(429) == 5
        assert statuses.count(200) == concurrent - 22
        assert (await client.get("/_mock/behavior")).json() == {"rules": []}
        stats = (await client.get("/_mock/stats")).json()
        assert stats["requests"] == concurrent
        assert stats["by_status"] == {"200": concurrent - 22, "429": 5, "503": 17}
        assert stats["by_model"] == {"scoped": concurrent // 4, "m": concurrent * 3 // 4}
