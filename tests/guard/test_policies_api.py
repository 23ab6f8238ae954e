"""Policies over the admin API, seen from both sides: what the admin API allows and shows (CRUD,
validation, bindings, who may govern what, tenant isolation, the effective policy of a key, the
audit trail) and what the proxy does with each change (blocked models, IP allowlists, max_tokens
caps and rate limits, lifted again when a binding goes)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, make_person, ok
from tests.factories import Org, Tenant, join, make_key, make_org, make_tenant, tenant_owner

CHAT = "/v1/chat/completions"


async def new_policy(api: Api, org: Org, **fields: Any) -> dict:
    body = {"name": f"policy-{secrets.token_hex(4)}", **fields}
    return ok(await api.post(f"{org.base}/policies", json=body), 201)


async def bind(api: Api, org: Org, policy_id: str, target_type: str, target_id: str) -> Any:
    return await api.post(
        f"{org.base}/policies/{policy_id}/bindings",
        json={"target_type": target_type, "target_id": target_id},
    )


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=3)


# --- CRUD and validation ---------------------------------------------------------------------


async def test_a_policy_is_created_read_listed_changed_and_deleted(org: Org) -> None:
    created = await new_policy(
        org.owner,
        org,
        name="Production",
        description="what production keys may do",
        allowed_models=["anthropic/*", "gpt-4o-*", "gpt-4o-*"],
        blocked_models=["gpt-4o-realtime*"],
        ip_allowlist=["10.1.2.3/8", "192.0.2.7", "2001:DB8::1/32"],
        rpm=600,
        tpm=10_000_000_000,
        max_tokens=4096,
    )
    assert created["id"].startswith("pol_")
    assert created["name"] == "Production"
    assert created["allowed_models"] == ["anthropic/*", "gpt-4o-*"]
    assert created["blocked_models"] == ["gpt-4o-realtime*"]
    assert created["ip_allowlist"] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert (created["rpm"], created["tpm"], created["max_tokens"]) == (600, 10**10, 4096)
    assert created["bindings"] == []
    path = f"{org.base}/policies/{created['id']}"
    assert ok(await org.owner.get(path)) == created

    others = [await new_policy(org.owner, org) for _ in range(3)]
    listed = await all_pages(org.owner, f"{org.base}/policies", {"limit": 2})
    assert [p["id"] for p in listed] == [created["id"], *(p["id"] for p in others)]

    changed = ok(
        await org.owner.patch(
            path, json={"name": "Prod", "allowed_models": None, "rpm": None, "tpm": 5}
        )
    )
    assert changed["name"] == "Prod"
    assert changed["allowed_models"] is None and changed["rpm"] is None
    assert changed["tpm"] == 5
    # Fields not sent keep their values.
    assert changed["blocked_models"] == ["gpt-4o-realtime*"]
    assert changed["max_tokens"] == 4096
    assert changed["description"] == "what production keys may do"

    assert (await org.owner.delete(path)).status_code == 204
    assert error(await org.owner.get(path), 404)["code"] == "not_found"
    error(await org.owner.patch(path, json={"rpm": 1}), 404)
    error(await org.owner.delete(path), 404)


async def test_a_policy_without_any_rule_is_allowed(org: Org) -> None:
    empty = await new_policy(org.owner, org)
    rules = ("allowed_models", "blocked_models", "ip_allowlist", "rpm", "tpm", "max_tokens")
    assert all(empty[field] is None for field in rules)
    assert empty["description"] is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"description": "nul\x00"}, "description"),
        ({"description": "x" * 1001}, "description"),
        ({"allowed_models": ["gpt\x07"]}, "allowed_models.0"),
        ({"allowed_models": [""]}, "allowed_models.0"),
        ({"blocked_models": [f"m{i}" for i in range(101)]}, "blocked_models"),
        ({"ip_allowlist": [f"10.0.0.{i}" for i in range(101)]}, "ip_allowlist"),
        ({"rpm": 0}, "rpm"),
        ({"rpm": 10_000_001}, "rpm"),
        ({"tpm": 10_000_000_001}, "tpm"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"rules": {}}, "rules"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(
    org: Org, fields: dict[str, Any], field: str
) -> None:
    body = {"name": "p", **fields}
    problem = error(await org.owner.post(f"{org.base}/policies", json=body), 422)
    assert problem["details"]["field"] == field, problem
    policy = await new_policy(org.owner, org)
    if field != "name":
        patched = await org.owner.patch(f"{org.base}/policies/{policy['id']}", json=fields)
        assert error(patched, 422)["details"]["field"] == field


@pytest.mark.parametrize("entry", ["10.0.0.300", "10.0.0.0/33", "example.com", "fe80::1%eth0"])
async def test_an_unreadable_ip_entry_is_422_naming_it(org: Org, entry: str) -> None:
    body = {"name": "ips", "ip_allowlist": ["10.0.0.0/8", entry]}
    problem = error(await org.owner.post(f"{org.base}/policies", json=body), 422)
    assert problem["details"] == {"field": "ip_allowlist", "entry": entry}
    assert entry in problem["message"]


async def test_a_duplicate_name_is_409(org: Org) -> None:
    first = await new_policy(org.owner, org, name="Shared")
    second = await new_policy(org.owner, org, name="Other")
    duplicate = await org.owner.post(f"{org.base}/policies", json={"name": "Shared"})
    assert error(duplicate, 409)["details"] == {"field": "name"}
    renamed = await org.owner.patch(f"{org.base}/policies/{second['id']}", json={"name": "Shared"})
    error(renamed, 409)
    # Renaming a policy to its own name is no conflict.
    ok(await org.owner.patch(f"{org.base}/policies/{first['id']}", json={"name": "Shared"}))


# --- bindings --------------------------------------------------------------------------------


async def test_a_policy_binds_to_a_group_a_member_and_a_key(org: Org) -> None:
    member = await join(org, "member", org.project)
    key = await make_key(org, org.project, by=member)
    policy = await new_policy(org.owner, org, rpm=10)
    made = []
    for target_type, target_id in (
        ("group", org.team),
        ("group", org.root),
        ("member", member.user_id),
        ("key", key.id),
    ):
        binding = ok(await bind(org.owner, org, policy["id"], target_type, target_id), 201)
        assert binding["id"].startswith("pb_")
        assert (binding["target_type"], binding["target_id"]) == (target_type, target_id)
        assert binding["policy_id"] == policy["id"]
        made.append(binding)
    error(await bind(org.owner, org, policy["id"], "group", org.team), 409)
    path = f"{org.base}/policies/{policy['id']}"
    shown = ok(await org.owner.get(path))
    assert [b["id"] for b in shown["bindings"]] == [b["id"] for b in made]

    unbind = f"{path}/bindings/{made[0]['id']}"
    assert (await org.owner.delete(unbind)).status_code == 204
    error(await org.owner.delete(unbind), 404)
    assert len(ok(await org.owner.get(path))["bindings"]) == 3
    # Deleting the policy takes its bindings with it: the key has no policy left.
    assert (await org.owner.delete(path)).status_code == 204
    effective = ok(await org.owner.get(f"{org.base}/keys/{key.id}/policy"))
    assert effective["policies"] == []


async def test_binding_to_a_target_that_is_gone_or_unknown_is_404(
    org: Org, runtime: Runtime
) -> None:
    policy = await new_policy(org.owner, org, rpm=10)
    leaving = await join(org, "member", org.project)
    key = await make_key(org, org.project, owner_user_id=leaving.user_id)
    doomed = ok(await org.owner.post(f"{org.base}/groups", json={"name": "doomed"}), 201)
    ok(await org.owner.delete(f"{org.base}/groups/{doomed['id']}"))
    revoked = await make_key(org, org.project)
    assert (await org.owner.delete(f"{org.base}/keys/{revoked.id}")).status_code == 204
    assert (await org.owner.delete(f"{org.base}/members/{leaving.user_id}")).status_code == 204
    stranger = await make_person(runtime)
    for target_type, target_id in (
        ("group", "grp_unknown"),
        ("group", doomed["id"]),
        ("member", leaving.user_id),
        ("member", stranger.user_id),
        ("key", revoked.id),
        ("key", "key_unknown"),
        ("key", org.team),  # an id of the wrong kind
    ):
        problem = error(await bind(org.owner, org, policy["id"], target_type, target_id), 404)
        assert problem["details"] == {"field": "target_id"}, (target_type, target_id)
    # A key of a removed member is disabled, not deleted: it may still be governed.
    ok(await bind(org.owner, org, policy["id"], "key", key.id), 201)
    bad_type = await bind(org.owner, org, policy["id"], "org", org.id)
    assert error(bad_type, 422)["details"]["field"] == "target_type"
    error(await bind(org.owner, org, "pol_unknown", "group", org.team), 404)
    error(await org.owner.delete(f"{org.base}/policies/{policy['id']}/bindings/pb_nope"), 404)


# --- who governs what ------------------------------------------------------------------------


async def test_an_admin_governs_policies_only_strictly_below_its_group(org: Org) -> None:
    team_admin = await join(org, "admin", org.team)
    division_admin = await join(org, "admin", org.division)
    member = await join(org, "member", org.team)
    members_key = await make_key(org, org.team, by=team_admin, owner_user_id=member.user_id)
    own_key = await make_key(org, org.team, by=team_admin)

    mine = await new_policy(team_admin, org, max_tokens=100)
    error(await bind(team_admin, org, mine["id"], "group", org.team), 403)
    error(await bind(team_admin, org, mine["id"], "group", org.root), 403)
    error(await bind(team_admin, org, mine["id"], "member", team_admin.user_id), 403)
    error(await bind(team_admin, org, mine["id"], "key", own_key.id), 403)
    ok(await bind(team_admin, org, mine["id"], "group", org.project), 201)
    ok(await bind(team_admin, org, mine["id"], "member", member.user_id), 201)
    ok(await bind(team_admin, org, mine["id"], "key", members_key.id), 201)
    mine_path = f"{org.base}/policies/{mine['id']}"
    ok(await team_admin.patch(mine_path, json={"max_tokens": 50}))

    # Once the policy also holds at the team itself, the team's admin may no longer change it.
    at_team = ok(await bind(org.owner, org, mine["id"], "group", org.team), 201)
    error(await team_admin.patch(mine_path, json={"max_tokens": 5000}), 403)
    error(await team_admin.delete(mine_path), 403)
    error(await team_admin.delete(f"{mine_path}/bindings/{at_team['id']}"), 403)
    # Those strictly above the team may.
    ok(await division_admin.patch(mine_path, json={"max_tokens": 60}))

    # A rule an owner placed on the team: the team admin reads it, cannot touch it.
    owners = await new_policy(org.owner, org, blocked_models=["gpt-*"])
    owners_path = f"{org.base}/policies/{owners['id']}"
    binding = ok(await bind(org.owner, org, owners["id"], "group", org.team), 201)
    assert ok(await team_admin.get(owners_path))["blocked_models"] == ["gpt-*"]
    error(await team_admin.patch(owners_path, json={"blocked_models": None}), 403)
    error(await team_admin.delete(owners_path), 403)
    error(await team_admin.delete(f"{owners_path}/bindings/{binding['id']}"), 403)
    ok(await division_admin.delete(f"{owners_path}/bindings/{binding['id']}"), 204)

    # The org itself (the root group) is the owners' alone.
    root = await new_policy(org.owner, org, rpm=1000)
    error(await bind(division_admin, org, root["id"], "group", org.root), 403)
    error(await bind(division_admin, org, root["id"], "group", org.division), 403)
    ok(await bind(org.owner, org, root["id"], "group", org.root), 201)
    error(await division_admin.patch(f"{org.base}/policies/{root['id']}", json={"rpm": 1}), 403)
    # An unbound policy is any owner's or admin's to change.
    loose = await new_policy(org.owner, org)
    ok(await team_admin.patch(f"{org.base}/policies/{loose['id']}", json={"rpm": 5}))
    assert (await team_admin.delete(f"{org.base}/policies/{loose['id']}")).status_code == 204


async def test_a_member_cannot_change_the_policies_of_their_own_key(org: Org) -> None:
    member = await join(org, "member", org.team)
    key = await make_key(org, org.team, by=member)
    policy = await new_policy(org.owner, org, allowed_models=["gpt-4o-mini"])
    binding = ok(await bind(org.owner, org, policy["id"], "key", key.id), 201)
    path = f"{org.base}/policies/{policy['id']}"

    error(await member.post(f"{org.base}/policies", json={"name": "mine"}), 403)
    error(await member.get(f"{org.base}/policies"), 403)
    error(await member.get(path), 403)
    error(await member.patch(path, json={"allowed_models": None}), 403)
    error(await member.delete(path), 403)
    error(await member.delete(f"{path}/bindings/{binding['id']}"), 403)
    error(await bind(member, org, policy["id"], "member", member.user_id), 403)
    # They may see what applies to their own key, and why.
    effective = ok(await member.get(f"{org.base}/keys/{key.id}/policy"))
    assert [p["id"] for p in effective["policies"]] == [policy["id"]]
    other = await make_key(org, org.team)
    error(await member.get(f"{org.base}/keys/{other.id}/policy"), 403)


async def test_a_viewer_reads_policies_but_cannot_write(org: Org) -> None:
    viewer = await join(org, "viewer", org.root)
    key = await make_key(org, org.team)
    policy = await new_policy(org.owner, org, rpm=10)
    binding = ok(await bind(org.owner, org, policy["id"], "group", org.team), 201)
    path = f"{org.base}/policies/{policy['id']}"

    assert ok(await viewer.get(path))["bindings"][0]["id"] == binding["id"]
    listed = ok(await viewer.get(f"{org.base}/policies"))
    assert [p["id"] for p in listed["items"]] == [policy["id"]]
    assert ok(await viewer.get(f"{org.base}/keys/{key.id}/policy"))["key_id"] == key.id
    error(await viewer.post(f"{org.base}/policies", json={"name": "v"}), 403)
    error(await viewer.patch(path, json={"rpm": 1}), 403)
    error(await viewer.delete(path), 403)
    error(await bind(viewer, org, policy["id"], "group", org.project), 403)
    error(await viewer.delete(f"{path}/bindings/{binding['id']}"), 403)


async def test_another_tenants_policies_and_targets_are_404(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    other = await make_org(runtime, app_client, "Other", levels=3)
    theirs = await new_policy(other.owner, other, rpm=5)
    their_binding = ok(await bind(other.owner, other, theirs["id"], "group", other.team), 201)
    their_member = await join(other, "member", other.team)
    their_key = await make_key(other, other.team)
    mine = await new_policy(org.owner, org, rpm=5)
    # Org A's owner reaching for org B's policies, through either org's path.
    for base in (org.base, other.base):
        path = f"{base}/policies/{theirs['id']}"
        for response in (
            await org.owner.get(path),
            await org.owner.patch(path, json={"rpm": 100}),
            await org.owner.delete(path),
            await bind(
                org.owner, org if base == org.base else other, theirs["id"], "group", org.team
            ),
            await org.owner.delete(f"{path}/bindings/{their_binding['id']}"),
            await org.owner.get(f"{base}/keys/{their_key.id}/policy"),
        ):
            assert error(response, 404)["code"] == "not_found"
    # ... nor can org A's policy be bound to org B's group, member or key.
    for target_type, target_id in (
        ("group", other.team),
        ("group", other.root),
        ("member", their_member.user_id),
        ("key", their_key.id),
    ):
        error(await bind(org.owner, org, mine["id"], target_type, target_id), 404)
    listed = ok(await org.owner.get(f"{org.base}/policies"))
    assert [p["id"] for p in listed["items"]] == [mine["id"]]
    # Org B's policy is untouched.
    untouched = ok(await other.owner.get(f"{other.base}/policies/{theirs['id']}"))
    assert untouched["rpm"] == 5 and len(untouched["bindings"]) == 1


# --- the effective policy of a key -------------------------------------------------------------


async def test_the_effective_policy_adds_up_key_member_group_and_org_policies(org: Org) -> None:
    member = await join(org, "member", org.project)
    key = await make_key(org, org.project, owner_user_id=member.user_id)
    on_org = await new_policy(
        org.owner,
        org,
        name="org",
        allowed_models=["gpt-*", "claude-*"],
        ip_allowlist=["10.0.0.0/8", "127.0.0.1"],
        rpm=600,
    )
    on_team = await new_policy(
        org.owner, org, name="team", blocked_models=["claude-3-opus*"], max_tokens=1000, tpm=50_000
    )
    on_team_too = await new_policy(
        org.owner, org, name="team too", blocked_models=["gpt-4.5*", "claude-3-opus*"], rpm=300
    )
    on_member = await new_policy(org.owner, org, name="member", allowed_models=["gpt-4o*"])
    on_key = await new_policy(org.owner, org, name="key", max_tokens=256, rpm=10)
    elsewhere = await new_policy(org.owner, org, name="elsewhere", max_tokens=1)
    sibling = ok(await org.owner.post(f"{org.base}/groups", json={"name": "sibling"}), 201)
    for policy, target_type, target_id in (
        (on_org, "group", org.root),
        (on_team, "group", org.team),
        (on_team_too, "group", org.team),
        (on_member, "member", member.user_id),
        (on_key, "key", key.id),
        (elsewhere, "group", sibling["id"]),
    ):
        ok(await bind(org.owner, org, policy["id"], target_type, target_id), 201)

    effective = ok(await org.owner.get(f"{org.base}/keys/{key.id}/policy"))
    assert effective["key_id"] == key.id
    # Narrowest scope first: the key, its owner, its groups from its own up, the org.
    assert [(p["name"], p["bound_to"]) for p in effective["policies"]] == [
        ("key", {"target_type": "key", "target_id": key.id}),
        ("member", {"target_type": "member", "target_id": member.user_id}),
        ("team", {"target_type": "group", "target_id": org.team}),
        ("team too", {"target_type": "group", "target_id": org.team}),
        ("org", {"target_type": "group", "target_id": org.root}),
    ]
    first = effective["policies"][0]
    assert first["id"] == on_key["id"]
    assert (first["max_tokens"], first["rpm"], first["tpm"]) == (256, 10, None)
    assert effective["allowed_models"] == [
        {"policy_id": on_member["id"], "patterns": ["gpt-4o*"]},
        {"policy_id": on_org["id"], "patterns": ["gpt-*", "claude-*"]},
    ]
    assert effective["blocked_models"] == ["claude-3-opus*", "gpt-4.5*"]
    assert effective["ip_allowlists"] == [
        {"policy_id": on_org["id"], "networks": ["10.0.0.0/8", "127.0.0.1/32"]}
    ]
    assert effective["max_tokens"] == {"value": 256, "policy_id": on_key["id"]}
    assert effective["rate_limits"] == [
        {"scope": "key", "scope_id": key.id, "rpm": 10, "tpm": None},
        {"scope": "group", "scope_id": org.team, "rpm": 300, "tpm": 50_000},
        {"scope": "org", "scope_id": org.id, "rpm": 600, "tpm": None},
    ]
    error(await org.owner.get(f"{org.base}/keys/key_unknown/policy"), 404)


async def test_a_key_without_policies_has_an_empty_effective_policy(org: Org) -> None:
    key = await make_key(org, org.team)
    assert ok(await org.owner.get(f"{org.base}/keys/{key.id}/policy")) == {
        "key_id": key.id,
        "policies": [],
        "allowed_models": [],
        "blocked_models": [],
        "ip_allowlists": [],
        "max_tokens": None,
        "rate_limits": [],
    }


# --- the audit trail ---------------------------------------------------------------------------


async def test_every_change_writes_an_audit_event(org: Org) -> None:
    policy = await new_policy(org.owner, org, name="audited", rpm=10)
    path = f"{org.base}/policies/{policy['id']}"
    ok(await org.owner.patch(path, json={"rpm": 20}))
    binding = ok(await bind(org.owner, org, policy["id"], "group", org.team), 201)
    assert (await org.owner.delete(f"{path}/bindings/{binding['id']}")).status_code == 204
    ok(await bind(org.owner, org, policy["id"], "group", org.project), 201)
    assert (await org.owner.delete(path)).status_code == 204
    # Refused changes leave no trace.
    error(await org.owner.patch(path, json={"rpm": 30}), 404)

    events = await all_pages(org.owner, f"{org.base}/audit", {"target_id": policy["id"]})
    events.sort(key=lambda e: e["seq"])
    assert [e["action"] for e in events] == [
        "policy.create",
        "policy.update",
        "policy.bind",
        "policy.unbind",
        "policy.bind",
        "policy.delete",
    ]
    create, update, bound, unbound, _, deleted = events
    assert {e["target_type"] for e in events} == {"policy"}
    assert create["after"]["name"] == "audited" and create["after"]["rpm"] == 10
    assert (update["before"]["rpm"], update["after"]["rpm"]) == (10, 20)
    assert bound["group_id"] == org.team
    assert bound["after"] == {"id": binding["id"], "target_type": "group", "target_id": org.team}
    assert unbound["before"] == bound["after"]
    assert deleted["before"]["bindings"][0]["target_id"] == org.project
    assert ok(await org.owner.get(f"{org.base}/audit/verify"))["intact"]


# --- through the proxy -------------------------------------------------------------------------


async def chat(
    client: httpx.AsyncClient, tenant: Tenant, model: str = "gpt-4o-mini", **fields: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}
    return await client.post(CHAT, json=body, headers={"authorization": f"Bearer {tenant.key}"})


async def models(client: httpx.AsyncClient, tenant: Tenant) -> set[str]:
    listed = ok(await client.get("/v1/models", headers={"authorization": f"Bearer {tenant.key}"}))
    return {m["id"] for m in listed["data"]}


def denial(response: httpx.Response, code: str) -> str:
    assert response.status_code == 403, response.text
    problem = response.json()["error"]
    assert problem["code"] == code, problem
    return str(problem["message"])


async def test_a_blocked_model_is_refused_until_the_binding_goes(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime)
    owner = await tenant_owner(runtime, proxy_client, tenant)
    base = f"/api/v1/orgs/{tenant.org_id}"
    assert (await chat(proxy_client, tenant, "claude-3-5-haiku")).status_code == 200
    policy = ok(
        await owner.post(
            f"{base}/policies", json={"name": "No Anthropic", "blocked_models": ["claude-*"]}
        ),
        201,
    )
    binding = ok(
        await owner.post(
            f"{base}/policies/{policy['id']}/bindings",
            json={"target_type": "group", "target_id": tenant.group_id},
        ),
        201,
    )
    message = denial(await chat(proxy_client, tenant, "claude-3-5-haiku"), "model_not_allowed")
    assert "No Anthropic" in message and policy["id"] in message
    assert (await chat(proxy_client, tenant, "gpt-4o-mini")).status_code == 200
    listed = await models(proxy_client, tenant)
    assert "claude-3-5-haiku" not in listed and "gpt-4o-mini" in listed

    unbind = f"{base}/policies/{policy['id']}/bindings/{binding['id']}"
    assert (await owner.delete(unbind)).status_code == 204
    assert (await chat(proxy_client, tenant, "claude-3-5-haiku")).status_code == 200
    assert "claude-3-5-haiku" in await models(proxy_client, tenant)


async def test_an_ip_allowlist_and_a_max_tokens_cap_hold_at_the_proxy(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime)
    owner = await tenant_owner(runtime, proxy_client, tenant)
    base = f"/api/v1/orgs/{tenant.org_id}"
    org = ok(await owner.get(base))
    fence = ok(
        await owner.post(
            f"{base}/policies", json={"name": "office only", "ip_allowlist": ["10.0.0.0/8"]}
        ),
        201,
    )
    ok(
        await owner.post(
            f"{base}/policies/{fence['id']}/bindings",
            json={"target_type": "key", "target_id": tenant.key_id},
        ),
        201,
    )
    # The ASGI test client calls from 127.0.0.1.
    message = denial(await chat(proxy_client, tenant), "ip_not_allowed")
    assert "127.0.0.1" in message and "office only" in message
    ok(await owner.patch(f"{base}/policies/{fence['id']}", json={"ip_allowlist": ["127.0.0.0/8"]}))
    assert (await chat(proxy_client, tenant)).status_code == 200

    cap = ok(await owner.post(f"{base}/policies", json={"name": "short", "max_tokens": 50}), 201)
    ok(
        await owner.post(
            f"{base}/policies/{cap['id']}/bindings",
            json={"target_type": "group", "target_id": org["root_group_id"]},
        ),
        201,
    )
    message = denial(await chat(proxy_client, tenant, max_tokens=100), "max_tokens_not_allowed")
    assert "short" in message and "the organization" in message
    assert (await chat(proxy_client, tenant, max_tokens=20)).status_code == 200
    assert (await chat(proxy_client, tenant)).status_code == 200
    assert (await owner.delete(f"{base}/policies/{cap['id']}")).status_code == 204
    assert (await chat(proxy_client, tenant, max_tokens=100)).status_code == 200


async def test_an_rpm_policy_on_the_key_limits_its_requests(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    tenant = await make_tenant(runtime)
    owner = await tenant_owner(runtime, proxy_client, tenant)
    base = f"/api/v1/orgs/{tenant.org_id}"
    slow = ok(await owner.post(f"{base}/policies", json={"name": "slow", "rpm": 1}), 201)
    ok(
        await owner.post(
            f"{base}/policies/{slow['id']}/bindings",
            json={"target_type": "key", "target_id": tenant.key_id},
        ),
        201,
    )
    assert (await chat(proxy_client, tenant)).status_code == 200
    limited = await chat(proxy_client, tenant)
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    ok(await owner.patch(f"{base}/policies/{slow['id']}", json={"rpm": None}))
    assert (await chat(proxy_client, tenant)).status_code == 200
