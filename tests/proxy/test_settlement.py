"""Reserve and settle paired by construction (proxy/settlement.py): however a call ends after
authentication, it is settled exactly once, so it is metered exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from sluicegate.app import create_app
from sluicegate.keys.lookup import AuthContext
from sluicegate.providers.base import Endpoint
from sluicegate.providers.config import ProviderSettings
from sluicegate.proxy import refusals
from sluicegate.proxy.requests import ProxyCall
from sluicegate.proxy.settlement import CLIENT_GONE, CLIENT_GONE_STATUS, Settlement
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.proxy.conftest import Tenant, usage_events


class ClientGone(OSError):
    """What a server's send raises once the client's connection is closed."""


async def _call_with_a_client_that_left(app: Any, key: str, body: dict[str, Any]) -> list[str]:
    """Drive the ASGI app with a client whose connection is gone before the answer starts."""
    content = orjson.dumps(body)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"host", b"gateway.test"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway.test", 80),
    }
    sent: list[str] = []
    requests = [{"type": "http.request", "body": content, "more_body": False}]

    async def receive() -> dict[str, Any]:
        # The body once, then the disconnect the server would report.
        return requests.pop() if requests else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        raise ClientGone("the client closed the connection")

    with pytest.raises(ClientGone):
        await app(scope, receive, send)
    return sent


async def test_a_stream_whose_client_left_before_the_answer_started_is_still_metered(
    settings: Settings, runtime: Runtime, provider_settings: ProviderSettings, tenant: Tenant
) -> None:
    """The relay never runs, so its `finally` never does: the response settles the call."""
    app = create_app(settings, runtime, provider_settings)
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    async with app.router.lifespan_context(app):
        sent = await _call_with_a_client_that_left(app, tenant.key, body)
        (event,) = await usage_events(runtime, tenant.org_id, expect=1)

    assert sent == ["http.response.start"]
    assert event.status_code == 499 and event.error_type == "client_disconnected"
    # The upstream was asked all the same: its prompt is billed, as an estimate.
    assert event.usage_estimated and event.prompt_tokens > 0 and event.completion_tokens == 0
    assert event.cost_nusd > 0


# --- each way out of a Settlement, with the pipeline's two ways to settle recorded -------------


def _call() -> ProxyCall:
    context = AuthContext(
        "key_1", "active", None, None, "org_1", False, "grp_1", ("grp_1",), "usr_1", "active", True
    )
    request = Request({"type": "http", "headers": [], "state": {"request_id": "req_1"}})
    return ProxyCall(request, context, Endpoint.CHAT, 0.0, datetime(2026, 1, 1, tzinfo=UTC))


class Recorder:
    """Settles as the pipeline does (claiming the call once) and notes each settlement."""

    def __init__(self) -> None:
        self.settled: list[tuple[str, dict[str, Any]]] = []

    async def now(self, call: ProxyCall, **outcome: Any) -> None:
        if call.claim_settlement():
            self.settled.append(("now", outcome))

    def later(self, call: ProxyCall, **outcome: Any) -> None:
        if call.claim_settlement():
            self.settled.append(("later", outcome))


async def test_a_refusal_is_settled_with_its_status_and_answered() -> None:
    call, recorder = _call(), Recorder()
    async with Settlement(call, recorder.now, recorder.later) as settlement:
        raise refusals.MODEL_NOT_FOUND.error(model="nope")
    assert settlement.answer is not None and settlement.answer.status_code == 404
    assert recorder.settled == [("now", {"status": 404, "error_type": "model_not_found"})]


async def test_an_unexpected_error_is_settled_as_500_and_raised() -> None:
    call, recorder = _call(), Recorder()
    with pytest.raises(RuntimeError):
        async with Settlement(call, recorder.now, recorder.later):
            raise RuntimeError("a bug")
    failed = refusals.INTERNAL_ERROR
    assert recorder.settled == [("now", {"status": failed.status, "error_type": failed.error_type})]


async def test_a_cancelled_call_is_settled_in_the_background_as_the_client_gone() -> None:
    call, recorder = _call(), Recorder()
    with pytest.raises(asyncio.CancelledError):
        async with Settlement(call, recorder.now, recorder.later):
            raise asyncio.CancelledError
    assert recorder.settled == [
        ("later", {"status": CLIENT_GONE_STATUS, "error_type": CLIENT_GONE})
    ]


async def test_a_stream_handed_over_is_left_to_its_relay() -> None:
    call, recorder = _call(), Recorder()
    async with Settlement(call, recorder.now, recorder.later) as settlement:
        settlement.hand_over(Response(status_code=200))
    assert recorder.settled == []


async def test_an_answer_already_settled_is_not_settled_again() -> None:
    call, recorder = _call(), Recorder()
    async with Settlement(call, recorder.now, recorder.later) as settlement:
        await recorder.now(call, status=200)
        settlement.answer = Response(status_code=200)
    assert recorder.settled == [("now", {"status": 200})]


async def test_an_answer_a_path_forgot_to_settle_is_settled_on_the_way_out() -> None:
    call, recorder = _call(), Recorder()
    async with Settlement(call, recorder.now, recorder.later) as settlement:
        settlement.answer = Response(status_code=200)
    assert recorder.settled == [("now", {"status": 200})]
