"""The admin API bounds what it reads: 413 before parsing (before reading at all when
Content-Length says too much), a few KB for a request without credentials, JSON only."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from sluicegate.api.body_limits import ANONYMOUS_BODY_BYTES
from sluicegate.runtime import Runtime
from tests.admin import make_person


async def test_an_anonymous_body_over_a_few_kilobytes_is_refused(
    app_client: httpx.AsyncClient,
) -> None:
    password = "x" * (ANONYMOUS_BODY_BYTES + 1)
    answer = await app_client.post(
        "/api/v1/auth/login", json={"email": "a@example.com", "password": password}
    )
    assert answer.status_code == 413
    error = answer.json()["error"]
    assert error["code"] == "request_too_large"
    assert error["details"] == {"limit_bytes": ANONYMOUS_BODY_BYTES}


async def test_a_signed_in_body_over_the_limit_is_refused_and_under_it_is_read(
    app_client: httpx.AsyncClient, runtime: Runtime
) -> None:
    person = await make_person(runtime)
    headers = {"authorization": f"Bearer {person.token}"}
    big = {"name": "x" * (2 * 1024 * 1024)}
    answer = await app_client.post("/api/v1/orgs", json=big, headers=headers)
    assert answer.status_code == 413
    fits = {"name": "x" * (100 * 1024)}  # read, then judged (a name that long is invalid)
    answer = await app_client.post("/api/v1/orgs", json=fits, headers=headers)
    assert answer.status_code == 422


async def test_a_declared_length_over_the_limit_is_refused_without_reading(
    app_client: httpx.AsyncClient,
) -> None:
    app = app_client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/auth/login",
        "raw_path": b"/api/v1/auth/login",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"209715200")],
        "client": ("127.0.0.1", 1),
        "server": ("gateway.test", 80),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


async def test_a_body_that_is_not_json_is_refused(app_client: httpx.AsyncClient) -> None:
    answer = await app_client.post(
        "/api/v1/auth/login",
        content=b"email=a@example.com&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "unsupported_media_type"
