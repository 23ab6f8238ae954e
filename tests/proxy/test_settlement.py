"""Reserve and settle paired by construction (proxy/settlement.py): however a call ends after
authentication, it is settled exactly once, so it is metered exactly once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluicegate.app import create_app
from sluicegate.providers.config import ProviderSettings
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
