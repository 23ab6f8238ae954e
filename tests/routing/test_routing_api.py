"""Routing overrides over the admin API, on a four-level tree (org root -> division -> team ->
project): an override reaches every key below its group, the nearest group wins field by field,
deleting restores inheritance, who may set and read what, tenant isolation, the audit trail,
validation naming the field, and the invalidation each change publishes after commit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sluicegate.core.invalidation import ROUTING_TOPIC
from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, ok
from tests.factories import Org, add_group, join, make_key, make_org


def routing(org: Org, group: str) -> str:
    return f"{org.base}/groups/{group}/routing"


def key_routing(org: Org, key_id: str) -> str:
    return f"{org.base}/keys/{key_id}/routing"


async def put(api: Api, org: Org, group: str, **fields: Any) -> dict[str, Any]:
    return dict(ok(await api.put(routing(org, group), json=fields)))


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=3)


# --- inheritance down the tree -----------------------------------------------------------------


async def test_an_override_at_the_team_applies_to_the_keys_of_its_projects(org: Org) -> None:
    key = await make_key(org, org.project)
    made = await put(
        org.owner,
        org,
        org.team,
        provider_order=["openai", "anthropic"],
        fallbacks=["gpt-4o-mini"],
        max_cost_per_request_usd="0.25",
    )
    assert made["id"].startswith("rto_") and made["group_id"] == org.team
    assert made["provider_order"] == ["openai", "anthropic"]
    assert made["max_cost_per_request_usd"] == "0.250000000"
    # A ceiling without an action refuses what would cost more.
    assert made["on_cost_exceeded"] == "refuse"
    assert made["allowed_providers"] is None and made["required_policies"] is None
    assert made["created_by"] == org.owner.user_id

    effective = ok(await org.owner.get(key_routing(org, key.id)))
    assert (effective["key_id"], effective["group_id"]) == (key.id, org.project)
    assert effective["provider_order"] == ["openai", "anthropic"]
    assert effective["fallbacks"] == ["gpt-4o-mini"]
    assert effective["max_cost_per_request_usd"] == "0.250000000"
    assert effective["source"] == {
        "provider_order": org.team,
        "fallbacks": org.team,
        "max_cost_per_request_usd": org.team,
        "on_cost_exceeded": org.team,
    }
    at_project = ok(await org.owner.get(routing(org, org.project)))
    assert at_project["group_id"] == org.project
    assert at_project["override"] is None
    assert at_project["effective"]["provider_order"] == ["openai", "anthropic"]
    assert at_project["effective"]["source"]["provider_order"] == org.team
    # Above the team nothing is set; a key of the division is routed as usual.
    division_key = await make_key(org, org.division)
    plain = ok(await org.owner.get(key_routing(org, division_key.id)))
    assert plain["source"] == {} and plain["provider_order"] is None
    assert ok(await org.owner.get(routing(org, org.division)))["effective"]["source"] == {}


async def test_a_projects_own_override_wins_field_by_field(org: Org) -> None:
    key = await make_key(org, org.project)
    await put(org.owner, org, org.root, required_policies=["zdr"], allowed_regions=["eu", "us"])
    await put(
        org.owner,
        org,
        org.team,
        provider_order=["openai"],
        max_cost_per_request_usd=1,
        on_cost_exceeded="cheaper",
    )
    await put(org.owner, org, org.project, provider_order=["anthropic"], allowed_regions=["us"])
    effective = ok(await org.owner.get(key_routing(org, key.id)))
    assert effective["provider_order"] == ["anthropic"]
    assert effective["allowed_regions"] == ["us"]
    assert effective["max_cost_per_request_usd"] == "1.000000000"
    assert effective["on_cost_exceeded"] == "cheaper"
    assert effective["required_policies"] == ["zdr"]
    assert effective["source"] == {
        "provider_order": org.project,
        "allowed_regions": org.project,
        "max_cost_per_request_usd": org.team,
        "on_cost_exceeded": org.team,
        "required_policies": org.root,
    }
    shown = ok(await org.owner.get(routing(org, org.project)))
    assert shown["override"]["provider_order"] == ["anthropic"]
    assert shown["override"]["max_cost_per_request_usd"] is None
    assert shown["effective"] == {key: effective[key] for key in shown["effective"]}


async def test_a_project_cannot_loosen_what_the_org_requires(org: Org) -> None:
    """Restrictions only tighten down the tree: requirements add up, allowed lists narrow, the
    lowest ceiling holds."""
    key = await make_key(org, org.project)
    await put(
        org.owner,
        org,
        org.root,
        required_policies=["zdr"],
        allowed_regions=["eu"],
        max_cost_per_request_usd=1,
    )
    await put(
        org.owner,
        org,
        org.project,
        required_policies=["no_training"],
        allowed_regions=["eu", "us"],
        max_cost_per_request_usd=5,
    )
    effective = ok(await org.owner.get(key_routing(org, key.id)))
    assert sorted(effective["required_policies"]) == ["no_training", "zdr"]
    assert effective["allowed_regions"] == ["eu"]
    assert effective["max_cost_per_request_usd"] == "1.000000000"
    assert effective["source"]["max_cost_per_request_usd"] == org.root


async def test_deleting_an_override_restores_inheritance(org: Org) -> None:
    key = await make_key(org, org.project)
    await put(org.owner, org, org.team, provider_order=["openai"])
    await put(org.owner, org, org.project, provider_order=["anthropic"])
    assert (await org.owner.delete(routing(org, org.project))).status_code == 204
    effective = ok(await org.owner.get(key_routing(org, key.id)))
    assert effective["provider_order"] == ["openai"]
    assert effective["source"] == {"provider_order": org.team}
    assert ok(await org.owner.get(routing(org, org.project)))["override"] is None
    # Nothing left to delete.
    problem = error(await org.owner.delete(routing(org, org.project)), 404)
    assert problem["details"] == {"field": "group_id"}
    assert (await org.owner.delete(routing(org, org.team))).status_code == 204
    assert ok(await org.owner.get(key_routing(org, key.id)))["source"] == {}


async def test_a_put_replaces_the_whole_override_of_the_group(org: Org) -> None:
    first = await put(
        org.owner,
        org,
        org.team,
        ignored_providers=["azure"],
        required_certifications=["hipaa", "soc2", "hipaa"],
        max_cost_per_request_usd="2",
    )
    assert first["required_certifications"] == ["soc2", "hipaa"]
    second = await put(org.owner, org, org.team, on_cost_exceeded="cheaper")
    assert second["id"] == first["id"]
    assert second["created_at"] == first["created_at"]
    assert second["ignored_providers"] is None and second["max_cost_per_request_usd"] is None
    assert second["on_cost_exceeded"] == "cheaper"
    listed = ok(await org.owner.get(f"{org.base}/routing"))
    assert listed["items"] == [second]


async def test_lists_are_kept_in_order_once_and_money_is_exact(org: Org) -> None:
    made = await put(
        org.owner,
        org,
        org.team,
        provider_order=["b", "a", "b"],
        fallbacks=["m2", "m1", "m2"],
        required_policies=["no_prompt_logging", "zdr"],
        max_cost_per_request_usd=0.1,
    )
    assert made["provider_order"] == ["b", "a"]
    assert made["fallbacks"] == ["m2", "m1"]
    assert made["required_policies"] == ["zdr", "no_prompt_logging"]
    assert made["max_cost_per_request_usd"] == "0.100000000"
    tiny = await put(org.owner, org, org.team, max_cost_per_request_usd="0.000000001")
    assert tiny["max_cost_per_request_usd"] == "0.000000001"


# --- who may do what ---------------------------------------------------------------------------


async def test_owners_and_admins_above_a_group_manage_its_override(org: Org) -> None:
    division_admin = await join(org, "admin", org.division)
    team_admin = await join(org, "admin", org.team)
    ok(await division_admin.put(routing(org, org.team), json={"provider_order": ["a"]}))
    ok(await team_admin.put(routing(org, org.project), json={"provider_order": ["b"]}))
    # Nobody sets the routing of their own group or of one above it.
    for group in (org.team, org.division, org.root):
        problem = error(await team_admin.put(routing(org, group), json={"fallbacks": ["m"]}), 403)
        assert problem["details"] == {"action": "routing.manage"}
        error(await team_admin.delete(routing(org, group)), 403)
    error(await division_admin.put(routing(org, org.division), json={"fallbacks": ["m"]}), 403)
    # An admin reads the routing in force at its own group, inherited fields included.
    assert ok(await team_admin.get(routing(org, org.team)))["override"]["provider_order"] == ["a"]
    assert (await division_admin.delete(routing(org, org.team))).status_code == 204
    assert (await team_admin.delete(routing(org, org.project))).status_code == 204


async def test_an_admin_of_a_sibling_subtree_neither_changes_nor_reads(org: Org) -> None:
    other_division = await add_group(org, "other division")
    sibling_admin = await join(org, "admin", other_division.id)
    await put(org.owner, org, org.team, provider_order=["a"])
    key = await make_key(org, org.project)
    for group in (org.team, org.project):
        error(await sibling_admin.put(routing(org, group), json={"provider_order": ["z"]}), 403)
        error(await sibling_admin.delete(routing(org, group)), 403)
        error(await sibling_admin.get(routing(org, group)), 403)
    error(await sibling_admin.get(key_routing(org, key.id)), 403)
    assert ok(await sibling_admin.get(f"{org.base}/routing"))["items"] == []
    assert ok(await org.owner.get(routing(org, org.team)))["override"]["provider_order"] == ["a"]


async def test_a_viewer_reads_and_cannot_change(org: Org) -> None:
    viewer = await join(org, "viewer", org.division)
    made = await put(org.owner, org, org.team, allowed_providers=["openai"])
    key = await make_key(org, org.project)
    assert ok(await viewer.get(routing(org, org.team)))["override"] == made
    assert ok(await viewer.get(key_routing(org, key.id)))["allowed_providers"] == ["openai"]
    assert [o["id"] for o in ok(await viewer.get(f"{org.base}/routing"))["items"]] == [made["id"]]
    for group in (org.team, org.project):
        error(await viewer.put(routing(org, group), json={"allowed_providers": ["x"]}), 403)
        error(await viewer.delete(routing(org, group)), 403)
    # Above the viewer's subtree there is nothing of theirs to read.
    error(await viewer.get(routing(org, org.root)), 403)


async def test_a_member_reads_the_routing_of_their_own_key_only(org: Org) -> None:
    member = await join(org, "member", org.project)
    own = await make_key(org, org.project, by=member)
    others = await make_key(org, org.project)
    await put(org.owner, org, org.team, fallbacks=["gpt-4o-mini"])
    assert ok(await member.get(key_routing(org, own.id)))["fallbacks"] == ["gpt-4o-mini"]
    error(await member.get(key_routing(org, others.id)), 403)
    error(await member.get(routing(org, org.project)), 403)
    error(await member.get(f"{org.base}/routing"), 403)
    error(await member.put(routing(org, org.project), json={"fallbacks": []}), 403)


async def test_the_list_shows_the_overrides_of_the_subtrees_the_caller_reads(org: Org) -> None:
    team_admin = await join(org, "admin", org.team)
    at_root = await put(org.owner, org, org.root, required_policies=["zdr"])
    at_team = await put(org.owner, org, org.team, provider_order=["a"])
    at_project = await put(org.owner, org, org.project, provider_order=["b"])
    everything = await all_pages(org.owner, f"{org.base}/routing", {"limit": 1})
    assert [o["id"] for o in everything] == [at_root["id"], at_team["id"], at_project["id"]]
    mine = await all_pages(team_admin, f"{org.base}/routing")
    assert [o["id"] for o in mine] == [at_team["id"], at_project["id"]]
    # A deleted group's override is listed no more.
    ok(await org.owner.delete(f"{org.base}/groups/{org.project}"))
    remaining = await all_pages(org.owner, f"{org.base}/routing")
    assert [o["id"] for o in remaining] == [at_root["id"], at_team["id"]]
    error(await org.owner.put(routing(org, org.project), json={"fallbacks": ["m"]}), 404)


async def test_another_orgs_groups_keys_and_overrides_are_404(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    other = await make_org(runtime, app_client, "Other", levels=2)
    theirs = await put(other.owner, other, other.team, provider_order=["a"])
    their_key = await make_key(other, other.team)
    await put(org.owner, org, org.team, provider_order=["mine"])
    for base in (org, other):
        answers = [
            await org.owner.put(routing(base, other.team), json={"provider_order": ["x"]}),
            await org.owner.get(routing(base, other.team)),
            await org.owner.delete(routing(base, other.team)),
            await org.owner.get(key_routing(base, their_key.id)),
        ]
        for answer in answers:
            assert error(answer, 404)["code"] == "not_found"
    assert error(await org.owner.get(f"{other.base}/routing"), 404)["code"] == "not_found"
    listed = ok(await org.owner.get(f"{org.base}/routing"))
    assert theirs["id"] not in str(listed)
    untouched = ok(await other.owner.get(routing(other, other.team)))
    assert untouched["override"] == theirs


# --- the audit trail and the invalidation --------------------------------------------------------


async def test_every_change_writes_an_audit_event_with_before_and_after(org: Org) -> None:
    made = await put(org.owner, org, org.team, provider_order=["a"], max_cost_per_request_usd="3")
    await put(org.owner, org, org.team, provider_order=["b"])
    assert (await org.owner.delete(routing(org, org.team))).status_code == 204
    # Refused changes leave no trace.
    error(await org.owner.put(routing(org, org.team), json={"allowed_providers": []}), 422)
    error(await org.owner.delete(routing(org, org.team)), 404)

    events = await all_pages(org.owner, f"{org.base}/audit", {"target_id": made["id"]})
    events.sort(key=lambda e: e["seq"])
    assert [e["action"] for e in events] == [
        "routing_override.create",
        "routing_override.update",
        "routing_override.delete",
    ]
    create, update, delete = events
    assert {e["target_type"] for e in events} == {"routing_override"}
    assert {e["group_id"] for e in events} == {org.team}
    assert {e["actor_user_id"] for e in events} == {org.owner.user_id}
    assert create["before"] is None
    assert create["after"]["provider_order"] == ["a"]
    assert create["after"]["max_cost_per_request_usd"] == "3.000000000"
    assert create["after"]["on_cost_exceeded"] == "refuse"
    assert update["before"] == create["after"]
    assert update["after"]["provider_order"] == ["b"]
    assert update["after"]["max_cost_per_request_usd"] is None
    assert delete["before"] == update["after"] and delete["after"] is None
    assert ok(await org.owner.get(f"{org.base}/audit/verify"))["intact"]


async def test_a_change_publishes_the_orgs_invalidation_after_commit(
    org: Org, runtime: Runtime
) -> None:
    heard: list[tuple[str, str]] = []

    async def listen(topic: str, payload: str) -> None:
        if topic == ROUTING_TOPIC:
            heard.append((topic, payload))

    team_admin = await join(org, "admin", org.team)
    runtime.bus.subscribe(listen)
    try:
        # Refused: rolled back, nothing published (this process hears its own invalidations
        # before the answer is sent; with Redis, their echo may follow).
        error(await team_admin.put(routing(org, org.team), json={"provider_order": ["a"]}), 403)
        assert heard == []
        await put(org.owner, org, org.team, provider_order=["a"])
        assert set(heard) == {(ROUTING_TOPIC, org.id)}
        heard.clear()
        assert (await org.owner.delete(routing(org, org.team))).status_code == 204
        assert set(heard) == {(ROUTING_TOPIC, org.id)}
    finally:
        runtime.bus.unsubscribe(listen)
