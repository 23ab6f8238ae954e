"""Group routing overrides set through the admin API, seen by the proxy at its next request
(the cache dropped over the bus after the commit): provider order, allowed providers,
compliance requirements and the cost ceiling, the nearest group winning field by field, and
inheritance restored when an override goes."""

from __future__ import annotations

from typing import Any

import httpx

from sluicegate.runtime import Runtime
from tests.admin import Api, ok
from tests.factories import Tenant, tenant_owner
from tests.routing.conftest import Mock

CHAT = "/v1/chat/completions"


def ask(model: str = "duo") -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


async def chat(client: httpx.AsyncClient, tenant: Tenant, model: str = "duo") -> httpx.Response:
    return await client.post(
        CHAT, json=ask(model), headers={"authorization": f"Bearer {tenant.key}"}
    )


async def served_by(client: httpx.AsyncClient, tenant: Tenant, model: str = "duo") -> str:
    answer = await chat(client, tenant, model)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-sluicegate-provider"]


async def put(owner: Api, tenant: Tenant, group: str, **fields: Any) -> None:
    ok(await owner.put(f"/api/v1/orgs/{tenant.org_id}/groups/{group}/routing", json=fields))


async def root_of(owner: Api, tenant: Tenant) -> str:
    return str(ok(await owner.get(f"/api/v1/orgs/{tenant.org_id}"))["root_group_id"])


async def test_the_next_request_follows_the_override_and_its_removal(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    owner = await tenant_owner(runtime, routed, tenant)
    root = await root_of(owner, tenant)
    assert await served_by(routed, tenant) == "alpha"
    await put(owner, tenant, tenant.group_id, provider_order=["beta"])
    assert await served_by(routed, tenant) == "beta"
    # The org allows alpha only; the group's own order still stands, over alpha alone.
    await put(owner, tenant, root, allowed_providers=["alpha"])
    assert await served_by(routed, tenant) == "alpha"
    path = f"/api/v1/orgs/{tenant.org_id}/groups/{root}/routing"
    assert (await owner.delete(path)).status_code == 204
    assert await served_by(routed, tenant) == "beta"
    path = f"/api/v1/orgs/{tenant.org_id}/groups/{tenant.group_id}/routing"
    assert (await owner.delete(path)).status_code == 204
    assert await served_by(routed, tenant) == "alpha"


async def test_a_requirement_no_provider_meets_is_refused_naming_the_group(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    owner = await tenant_owner(runtime, routed, tenant)
    await put(owner, tenant, tenant.group_id, required_certifications=["hipaa"])
    answer = await chat(routed, tenant)
    assert answer.status_code == 403, answer.text
    problem = answer.json()["error"]
    assert problem["code"] == "no_compliant_provider"
    assert tenant.group_id in problem["message"] and "hipaa" in problem["message"]
    assert (alpha.requests, beta.requests) == (0, 0)
    # A PUT replaces the whole override: no certification is required any more, and only beta
    # serves from the us region.
    await put(owner, tenant, tenant.group_id, allowed_regions=["us"])
    assert await served_by(routed, tenant) == "beta"


async def test_a_cost_ceiling_refuses_what_may_cost_more(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    owner = await tenant_owner(runtime, routed, tenant)
    await put(owner, tenant, tenant.group_id, max_cost_per_request_usd="0.000001")
    answer = await chat(routed, tenant)
    assert answer.status_code == 403, answer.text
    problem = answer.json()["error"]
    assert problem["code"] == "cost_ceiling_exceeded"
    assert "0.000001000 USD" in problem["message"] and tenant.group_id in problem["message"]
    await put(owner, tenant, tenant.group_id, max_cost_per_request_usd="10")
    assert await served_by(routed, tenant) == "alpha"
