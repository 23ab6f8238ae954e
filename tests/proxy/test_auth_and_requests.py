"""Who may call, and what a malformed request gets: always an OpenAI-shaped error, never a 500."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from sluicegate.app import create_app
from sluicegate.identity.models import User
from sluicegate.keys.lookup import USER_TOPIC
from sluicegate.keys.models import ApiKey
from sluicegate.orgs.models import Membership
from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.factories import Tenant, make_tenant
from tests.proxy.conftest import set_key_status, usage_events

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def auth(tenant: Tenant) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant.key}"}


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_a_valid_key_is_served(proxy_client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await proxy_client.post(CHAT, json=BODY, headers=auth(tenant))
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer sk-sg-not-a-real-key"},
        {"authorization": "Basic abc"},
        {"x-api-key": "sk-sg-nope"},
    ],
)
async def test_absent_or_unknown_keys_are_401(
    proxy_client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    error = error_of(await proxy_client.post(CHAT, json=BODY, headers=headers), 401)
    assert error["type"] == "authentication_error"


async def test_disabled_key_is_refused_at_once_and_enabled_again(
    proxy_client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    assert (await proxy_client.post(CHAT, json=BODY, headers=auth(tenant))).status_code == 200
    await set_key_status(runtime, tenant, "disabled")
    error = error_of(await proxy_client.post(CHAT, json=BODY, headers=auth(tenant)), 401)
    assert "disabled" in error["message"]
    await set_key_status(runtime, tenant, "active")
    assert (await proxy_client.post(CHAT, json=BODY, headers=auth(tenant))).status_code == 200


async def test_expired_key_is_401(
    proxy_client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == tenant.key_id)
            .values(expires_at=runtime.clock.now() - timedelta(seconds=1))
        )
    error = error_of(await proxy_client.post(CHAT, json=BODY, headers=auth(tenant)), 401)
    assert "expired" in error["message"]


async def test_frozen_or_removed_owner_is_403(
    proxy_client: httpx.AsyncClient, runtime: Runtime
) -> None:
    frozen, removed = await make_tenant(runtime), await make_tenant(runtime)
    async with runtime.unit_of_work() as session:
        await session.execute(update(User).where(User.id == frozen.user_id).values(status="frozen"))
        await session.execute(
            update(Membership).where(Membership.user_id == removed.user_id).values(status="removed")
        )
    await runtime.bus.publish(USER_TOPIC, frozen.user_id)
    await runtime.bus.publish(USER_TOPIC, removed.user_id)
    assert (
        error_of(await proxy_client.post(CHAT, json=BODY, headers=auth(frozen)), 403)["code"]
        == "owner_frozen"
    )
    assert (
        error_of(await proxy_client.post(CHAT, json=BODY, headers=auth(removed)), 403)["code"]
        == "owner_removed"
    )


async def test_unknown_model_is_404_and_says_how_to_list(
    proxy_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {**BODY, "model": "gpt-9-imaginary"}
    error = error_of(await proxy_client.post(CHAT, json=body, headers=auth(tenant)), 404)
    assert error["code"] == "model_not_found" and "GET /v1/models" in error["message"]


async def test_allowed_models_limit_calls_and_the_model_list(
    proxy_client: httpx.AsyncClient, runtime: Runtime
) -> None:
    limited = await make_tenant(runtime, allowed_models=["gpt-4o-*", "text-embedding-*"])
    listed = await proxy_client.get("/v1/models", headers=auth(limited))
    assert {m["id"] for m in listed.json()["data"]} == {"gpt-4o-mini", "text-embedding-3-small"}
    body = {**BODY, "model": "claude-3-5-haiku"}
    error = error_of(await proxy_client.post(CHAT, json=body, headers=auth(limited)), 403)
    assert error["code"] == "model_not_allowed"


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b"", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [1]}', "messages[0]"),
        (b'{"model": 7, "messages": [{"role": "user"}]}', "model"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "max_tokens": "9"}',
            "max_tokens",
        ),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "n": 0}', "n"),
        (b'\xff\xfe{"model": 1}', None),
        (b"[" * 5000 + b"]" * 5000, None),
        (b'{"model": "text-embedding-3-small", "messages": [{"role": "user"}]}', "model"),
    ],
)
async def test_malformed_requests_are_400_naming_the_field(
    proxy_client: httpx.AsyncClient, tenant: Tenant, raw: bytes, param: str | None
) -> None:
    response = await proxy_client.post(
        CHAT, content=raw, headers={**auth(tenant), "content-type": "application/json"}
    )
    error = error_of(response, 400)
    assert error["param"] == param


async def test_failed_requests_are_metered_too(
    proxy_client: httpx.AsyncClient, tenant: Tenant, runtime: Runtime
) -> None:
    await proxy_client.post(CHAT, content=b"{", headers=auth(tenant))
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert (event.status_code, event.error_type, event.cost_nusd) == (400, "invalid_request", 0)


async def test_oversized_body_is_413(
    settings: Settings, runtime: Runtime, provider_settings: ProviderSettings, tenant: Tenant
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    app = create_app(small, runtime, provider_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw.test"
        ) as client,
    ):
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 5000}]}
        error = error_of(await client.post(CHAT, json=big, headers=auth(tenant)), 413)
        assert "SLUICEGATE_MAX_BODY_BYTES" in error["message"]
        assert (await client.post(CHAT, json=BODY, headers=auth(tenant))).status_code == 200


async def test_a_burst_with_a_cold_key_loads_it_once(runtime: Runtime, tenant: Tenant) -> None:
    from sluicegate.keys.lookup import KeyResolver

    resolver = KeyResolver(runtime.sessions, runtime.settings.secret, runtime.clock)
    loads = 0
    original = resolver._load

    async def counting(digest: str):  # type: ignore[no-untyped-def]
        nonlocal loads
        loads += 1
        return await original(digest)

    resolver._load = counting  # type: ignore[method-assign]
    contexts = await asyncio.gather(*(resolver.resolve(tenant.key) for _ in range(50)))
    assert loads == 1
    assert {c.key_id for c in contexts if c is not None} == {tenant.key_id}


async def test_unknown_v1_paths_answer_in_openai_shape(proxy_client: httpx.AsyncClient) -> None:
    error = error_of(await proxy_client.post("/v1/audio/speech", json={}), 404)
    assert error["code"] == "unknown_url" and "/v1/chat/completions" in error["message"]


async def test_an_unexpected_failure_is_an_openai_shaped_500(
    proxy_client: httpx.AsyncClient,
    tenant: Tenant,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sluicegate.proxy.pipeline import Pipeline

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Pipeline, "routing_for", broken)
    error = error_of(await proxy_client.post(CHAT, json=BODY, headers=auth(tenant)), 500)
    assert error["code"] == "internal_error" and "x-request-id" in error["message"]
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert (event.status_code, event.error_type) == (500, "internal_error")
