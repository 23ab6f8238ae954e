"""Group routing overrides set through the admin API, seen by the official openai SDK: a zdr group
never reaches a provider that keeps data, whatever the request asks; the cost ceiling refuses or
routes cheaper; a team's override reaches its projects' keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, ok
from tests.factories import Tenant, tenant_owner
from tests.routing.conftest import Mock

HELLO = [{"role": "user", "content": "hi"}]

# Every way a request might try to reach beta, which keeps no data policy.
ASKS: list[dict[str, Any]] = [
    {},
    {"provider": {"order": ["beta"]}},
    {"provider": {"only": ["beta"]}},
    {"provider": {"ignore": ["alpha"]}},
    {"provider": {"sort": "price", "zdr": False, "data_collection": "allow"}},
    {"provider": {"order": ["beta", "alpha"], "allow_fallbacks": False}},
    {"models": ["duo", "beta-only", "dear"]},
]


@pytest.fixture
async def sdk(routed: httpx.AsyncClient, tenant: Tenant) -> AsyncIterator[openai.AsyncOpenAI]:
    yield openai.AsyncOpenAI(
        base_url="http://gateway.test/v1", api_key=tenant.key, http_client=routed, max_retries=0
    )


@pytest.fixture
async def owner(routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime) -> Api:
    return await tenant_owner(runtime, routed, tenant)


async def put(owner: Api, tenant: Tenant, group: str, **fields: Any) -> None:
    ok(await owner.put(f"/api/v1/orgs/{tenant.org_id}/groups/{group}/routing", json=fields))


async def provider_of(sdk: openai.AsyncOpenAI, model: str, extra: dict[str, Any]) -> str:
    answer = await sdk.chat.completions.with_raw_response.create(
        model=model, messages=HELLO, extra_body=extra or None
    )
    answer.parse()
    return answer.headers["x-sluicegate-provider"]


async def test_a_zdr_group_never_reaches_a_provider_that_keeps_data_whatever_it_asks(
    sdk: openai.AsyncOpenAI, owner: Api, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    root = ok(await owner.get(f"/api/v1/orgs/{tenant.org_id}"))["root_group_id"]
    await put(owner, tenant, root, required_policies=["zdr"])
    # The key's own group tries to loosen it and to prefer beta: the requirement stays.
    await put(owner, tenant, tenant.group_id, required_policies=[], provider_order=["beta"])
    for ask in ASKS:
        try:
            assert await provider_of(sdk, "duo", ask) == "alpha", ask
        except openai.PermissionDeniedError as refused:
            assert refused.body["code"] == "no_compliant_provider", ask  # type: ignore[index]
    # With alpha failing there is no compliant deployment left to try: an error, never beta.
    alpha.fail("error-500")
    for ask in ASKS:
        with pytest.raises(openai.APIStatusError):
            await provider_of(sdk, "duo", ask)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await provider_of(sdk, "beta-only", {})
    assert "required_policies zdr" in refused.value.body["message"]  # type: ignore[index]
    assert root in refused.value.body["message"]  # type: ignore[index]
    assert beta.requests == 0


async def test_a_cost_ceiling_refuses_or_keeps_to_cheaper_deployments(
    sdk: openai.AsyncOpenAI, owner: Api, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    # `cheap` may cost about 0.002 USD (1000 output tokens at 2 USD per million), its fallback
    # `dear` about 0.02.
    await put(owner, tenant, tenant.group_id, max_cost_per_request_usd="0.001")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await provider_of(sdk, "cheap", {})
    assert refused.value.body["code"] == "cost_ceiling_exceeded"  # type: ignore[index]
    assert alpha.requests == 0
    # Between the two, `cheaper` serves the cheap model and never falls back to the dear one.
    await put(
        owner, tenant, tenant.group_id, max_cost_per_request_usd="0.01", on_cost_exceeded="cheaper"
    )
    assert await provider_of(sdk, "cheap", {}) == "alpha"
    alpha.fail("error-500")
    with pytest.raises(openai.APIStatusError) as failed:
        await provider_of(sdk, "cheap", {})
    assert failed.value.status_code == 502
    assert beta.requests == 0
    # Without the ceiling the same call falls back to `dear` on beta.
    assert (
        await owner.delete(f"/api/v1/orgs/{tenant.org_id}/groups/{tenant.group_id}/routing")
    ).status_code == 204
    assert await provider_of(sdk, "cheap", {}) == "beta"


async def test_a_group_overrides_fallback_chain_is_followed(
    sdk: openai.AsyncOpenAI, owner: Api, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    await put(owner, tenant, tenant.group_id, fallbacks=["beta-only"])
    alpha.fail("error-500")
    answer = await sdk.chat.completions.with_raw_response.create(model="cheap", messages=HELLO)
    answer.parse()
    assert answer.headers["x-sluicegate-model"] == "beta-only"
