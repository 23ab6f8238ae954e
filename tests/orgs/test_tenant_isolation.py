"""Tenant isolation: org B's owner gets 404 on every org A resource, through every org-scoped
route the app serves, and cannot smuggle org A's ids into org B's own routes either. Nothing in
org A changes."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, ok, org_scoped_routes
from tests.factories import add_group, join, make_key, make_org, put_budget

_PARAM = re.compile(r"\{([^}]+)\}")


@dataclass
class Tenant:
    org_id: str
    group_id: str
    member_id: str
    key_id: str
    invitation_id: str
    budget_id: str
    policy_id: str
    binding_id: str
    channel_id: str
    rule_id: str
    alert_id: str
    api: Api

    def ids(self) -> dict[str, str]:
        return {
            "org_id": self.org_id,
            "group_id": self.group_id,
            "user_id": self.member_id,
            "key_id": self.key_id,
            "invitation_id": self.invitation_id,
            "budget_id": self.budget_id,
            "policy_id": self.policy_id,
            "binding_id": self.binding_id,
            "channel_id": self.channel_id,
            "rule_id": self.rule_id,
            "alert_id": self.alert_id,
        }


async def make_tenant(runtime: Runtime, client: httpx.AsyncClient, name: str) -> Tenant:
    """An org made through the API: a group, a member (by invitation), a key, an invitation."""
    org = await make_org(runtime, client, name)
    api, base = org.owner, org.base
    group = await add_group(org, "team")
    member = await join(org, "member", group.id)
    key = await make_key(org, group.id, owner_user_id=member.user_id)
    pending = ok(
        await api.post(
            f"{base}/invitations",
            json={
                "email": f"p-{secrets.token_hex(4)}@example.com",
                "role": "viewer",
                "group_id": group.id,
            },
        ),
        201,
    )
    budget = await put_budget(org, "key", key.id, "5")
    ok(await api.put(f"{base}/groups/{group.id}/routing", json={"provider_order": ["a"]}))
    policy = ok(await api.post(f"{base}/policies", json={"name": "p", "rpm": 100}), 201)
    binding = ok(
        await api.post(
            f"{base}/policies/{policy['id']}/bindings",
            json={"target_type": "group", "target_id": group.id},
        ),
        201,
    )
    ok(await api.post(f"{base}/credits/topups", json={"amount_usd": "10"}), 201)
    channel = ok(
        await api.post(
            f"{base}/alerts/channels",
            # A literal public address: checked without DNS, never connected to here.
            json={"name": "hook", "kind": "webhook", "url": "https://93.184.215.14/hook"},
        ),
        201,
    )
    rule = ok(
        await api.post(
            f"{base}/alerts/rules",
            json={"name": "keys", "event": "key.created", "channel_ids": [channel["id"]]},
        ),
        201,
    )
    # Creating the key raised a key.created alert.
    [alert, *_] = ok(await api.get(f"{base}/alerts", params={"event": "key.created"}))["items"]
    return Tenant(
        org.id,
        group.id,
        member.user_id,
        key.id,
        pending["id"],
        budget.id,
        policy["id"],
        binding["id"],
        channel["id"],
        rule["id"],
        alert["id"],
        api,
    )


def body_for(method: str, template: str, ids: dict[str, str]) -> Any:
    """A body that passes validation, so that only the tenant check can refuse the call."""
    bodies: dict[tuple[str, str], Any] = {
        ("PATCH", "/orgs/{org_id}"): {"name": "Taken over"},
        ("POST", "/orgs/{org_id}/groups"): {"name": "g", "parent_id": ids["group_id"]},
        ("PATCH", "/orgs/{org_id}/groups/{group_id}"): {"name": "renamed"},
        ("PATCH", "/orgs/{org_id}/members/{user_id}"): {"home_group_id": ids["group_id"]},
        ("PUT", "/orgs/{org_id}/members/{user_id}/roles"): {
            "group_id": ids["group_id"],
            "role": "admin",
        },
        ("POST", "/orgs/{org_id}/invitations"): {
            "email": f"x-{secrets.token_hex(4)}@example.com",
            "role": "member",
            "group_id": ids["group_id"],
        },
        ("POST", "/orgs/{org_id}/keys"): {
            "name": "stolen",
            "group_id": ids["group_id"],
            "owner_user_id": ids["user_id"],
        },
        ("PATCH", "/orgs/{org_id}/keys/{key_id}"): {"status": "disabled"},
        ("POST", "/orgs/{org_id}/keys/{key_id}/rotate"): {"grace_period_seconds": 0},
        ("PUT", "/orgs/{org_id}/budgets"): {
            "scope_type": "key",
            "scope_id": ids["key_id"],
            "limit_usd": "1000",
            "period": "day",
        },
        ("POST", "/orgs/{org_id}/policies"): {"name": f"p-{secrets.token_hex(3)}"},
        ("PATCH", "/orgs/{org_id}/policies/{policy_id}"): {"rpm": 100000},
        ("POST", "/orgs/{org_id}/policies/{policy_id}/bindings"): {
            "target_type": "key",
            "target_id": ids["key_id"],
        },
        ("PUT", "/orgs/{org_id}/groups/{group_id}/routing"): {"provider_order": ["stolen"]},
        ("POST", "/orgs/{org_id}/credits/topups"): {"amount_usd": "1000"},
        ("POST", "/orgs/{org_id}/alerts/channels"): {
            "name": f"c-{secrets.token_hex(3)}",
            "kind": "webhook",
            "url": "https://93.184.215.14/stolen",
        },
        ("PATCH", "/orgs/{org_id}/alerts/channels/{channel_id}"): {"enabled": False},
        ("POST", "/orgs/{org_id}/alerts/rules"): {
            "name": "stolen",
            "event": "key.created",
            "scope_group_id": ids["group_id"],
            "channel_ids": [ids["channel_id"]],
        },
        ("PATCH", "/orgs/{org_id}/alerts/rules/{rule_id}"): {"enabled": False},
        ("POST", "/orgs/{org_id}/credits/adjustments"): {
            "amount_usd": "1000",
            "kind": "adjustment",
            "note": "taken over",
        },
    }
    return bodies.get((method, template.removeprefix("/api/v1")))


async def _chain_length(tenant: Tenant) -> int:
    report = ok(await tenant.api.get(f"/api/v1/orgs/{tenant.org_id}/audit/verify"))
    assert report["intact"]
    return int(report["checked"])


@pytest.fixture
async def tenants(runtime: Runtime, app_client: httpx.AsyncClient) -> tuple[Tenant, Tenant]:
    return (
        await make_tenant(runtime, app_client, "A"),
        await make_tenant(runtime, app_client, "B"),
    )


async def test_org_b_owner_gets_404_on_every_org_a_resource(
    tenants: tuple[Tenant, Tenant], app_client: httpx.AsyncClient
) -> None:
    a, b = tenants
    routes = org_scoped_routes()
    assert len(routes) >= 25, routes
    before = await _chain_length(a)
    answers = {}
    for method, template in routes:
        ids = a.ids()
        path = _PARAM.sub(lambda m, ids=ids: ids[m.group(1)], template)
        response = await b.api.call(method, path, json=body_for(method, template, ids))
        answers[(method, template)] = response.status_code
        if response.status_code == 404:
            assert response.json()["error"]["code"] == "not_found"
    assert {route: status for route, status in answers.items() if status != 404} == {}
    assert await _chain_length(a) == before, "org A changed"


async def test_org_a_ids_inside_org_b_routes_are_404(
    tenants: tuple[Tenant, Tenant], app_client: httpx.AsyncClient
) -> None:
    a, b = tenants
    answers = {}
    for method, template in org_scoped_routes():
        names = set(_PARAM.findall(template)) - {"org_id"}
        body = body_for(method, template, a.ids())
        if not names and not any(foreign in str(body) for foreign in a.ids().values()):
            continue  # nothing of org A's to put in this call
        ids = {**a.ids(), "org_id": b.org_id}
        path = _PARAM.sub(lambda m, ids=ids: ids[m.group(1)], template)
        response = await b.api.call(method, path, json=body)
        answers[(method, template)] = response.status_code
    assert answers, "no route took an id"
    assert {route: status for route, status in answers.items() if status != 404} == {}
    # The same calls with org B's own ids do reach org B's objects (the 404s above were about
    # the tenant, not about a broken route).
    mine = ok(await b.api.get(f"/api/v1/orgs/{b.org_id}/keys/{b.key_id}"))
    assert mine["id"] == b.key_id


async def test_lists_never_show_another_tenants_rows(tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    for collection in (
        "groups",
        "members",
        "keys",
        "invitations",
        "audit",
        "budgets",
        "policies",
        "routing",
        "credits/ledger",
        "activity",
        "alerts",
        "alerts/channels",
        "alerts/rules",
    ):
        items = ok(await b.api.get(f"/api/v1/orgs/{b.org_id}/{collection}", params={"limit": 200}))
        text = str(items)
        for foreign in a.ids().values():
            assert foreign not in text, (collection, foreign)
    mine = ok(await b.api.get("/api/v1/orgs"))
    assert [org["id"] for org in mine["items"]] == [b.org_id]
