"""Organizations and their group tree over the admin API: creation makes the caller owner, one
person in many orgs, settings and their validation, soft delete, tree depth on create and move,
moves that carry the subtree, and deletion only when empty (or disabling the keys inside)."""

from __future__ import annotations

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, make_person, ok
from tests.factories import add_group, join, make_org_as


@pytest.fixture
async def owner(runtime: Runtime, app_client: httpx.AsyncClient) -> Api:
    return Api(app_client, await make_person(runtime))


async def test_the_creator_is_owner_homed_at_the_root(owner: Api) -> None:
    org = await make_org_as(owner, timezone="Asia/Kathmandu")
    assert org.body["timezone"] == "Asia/Kathmandu" and org.body["max_level"] == 3
    me = ok(await owner.get("/api/v1/auth/me"))
    assert me["memberships"] == [
        {
            "org_id": org.id,
            "org_name": "Acme",
            "home_group_id": org.root,
            "roles": [{"group_id": org.root, "role": "owner"}],
        }
    ]
    assert ok(await owner.get(org.base)) == org.body


async def test_one_person_belongs_to_many_orgs_and_lists_them(owner: Api) -> None:
    ids = {(await make_org_as(owner)).id for _ in range(3)}
    listed = await all_pages(owner, "/api/v1/orgs", {"limit": 2})
    assert {org["id"] for org in listed} == ids


async def test_an_invalid_timezone_is_422_naming_the_field(owner: Api) -> None:
    body = error(await owner.post("/api/v1/orgs", json={"name": "X", "timezone": "Mars/Base"}), 422)
    assert body["details"]["field"] == "timezone" and "timezone" in body["message"]
    org = await make_org_as(owner)
    body = error(await owner.patch(org.base, json={"timezone": "Europe/Nowhere"}), 422)
    assert body["details"]["field"] == "timezone"


async def test_settings_change_and_are_validated(owner: Api) -> None:
    org = await make_org_as(owner)
    changed = ok(
        await owner.patch(
            org.base,
            json={
                "name": "Acme Corp",
                "timezone": "Asia/Kolkata",
                "max_level": 5,
                "topup_max_level": 2,
                "members_see_org_feed": True,
            },
        )
    )
    assert (changed["name"], changed["timezone"], changed["max_level"]) == (
        "Acme Corp",
        "Asia/Kolkata",
        5,
    )
    assert changed["topup_max_level"] == 2 and changed["members_see_org_feed"] is True
    above = error(await owner.patch(org.base, json={"topup_max_level": 6}), 422)
    assert above["details"]["field"] == "topup_max_level"
    error(await owner.patch(org.base, json={"unknown_setting": 1}), 422)


async def test_a_group_too_deep_is_422_stating_the_limit(owner: Api) -> None:
    org = await make_org_as(owner)
    division = await add_group(org, "division")
    team = await add_group(org, "team", division.id)
    project = await add_group(org, "project", team.id)
    assert [division.level, team.level, project.level] == [1, 2, 3]
    body = error(
        await owner.post(f"{org.base}/groups", json={"name": "deeper", "parent_id": project.id}),
        422,
    )
    assert body["details"] == {"field": "parent_id", "max_level": 3}
    assert "maximum level 3" in body["message"]


async def test_the_depth_is_configurable_per_org(owner: Api) -> None:
    org = await make_org_as(owner)
    ok(await owner.patch(org.base, json={"max_level": 4}))
    parent = None
    for level in range(1, 5):
        group = await add_group(org, f"level {level}", parent)
        assert group.level == level
        parent = group.id
    error(await owner.post(f"{org.base}/groups", json={"name": "five", "parent_id": parent}), 422)
    # Lowering the limit below the deepest group is refused, naming the deepest level.
    body = error(await owner.patch(org.base, json={"max_level": 2}), 422)
    assert body["details"] == {"field": "max_level", "deepest_level": 4}


async def test_sibling_names_are_unique_and_a_deleted_group_frees_its_name(owner: Api) -> None:
    org = await make_org_as(owner)
    first = await add_group(org, "research")
    taken = error(await owner.post(f"{org.base}/groups", json={"name": "research"}), 409)
    assert taken["details"] == {"field": "name"}
    assert (await owner.delete(f"{org.base}/groups/{first.id}")).status_code == 200
    again = await add_group(org, "research")
    assert again.id != first.id
    error(await owner.get(f"{org.base}/groups/{first.id}"), 404)


async def test_a_move_carries_the_subtree_and_keeps_the_depth_limit(owner: Api) -> None:
    org = await make_org_as(owner)
    a = await add_group(org, "a")
    b = await add_group(org, "b")
    team = await add_group(org, "team", a.id)
    project = await add_group(org, "project", team.id)
    moved = ok(await owner.patch(f"{org.base}/groups/{team.id}", json={"parent_id": b.id}))
    assert moved["path"] == [b.path[0], b.id, team.id] and moved["level"] == 2
    below = ok(await owner.get(f"{org.base}/groups/{project.id}"))
    assert below["path"] == [*moved["path"], project.id] and below["level"] == 3
    # Under a level-2 group the subtree would reach level 4.
    other_team = await add_group(org, "other team", a.id)
    body = error(
        await owner.patch(f"{org.base}/groups/{team.id}", json={"parent_id": other_team.id}), 422
    )
    assert body["details"]["max_level"] == 3 and "level 4" in body["message"]


async def test_a_group_never_moves_under_itself_or_its_descendants(owner: Api) -> None:
    org = await make_org_as(owner)
    a = await add_group(org, "a")
    child = await add_group(org, "child", a.id)
    for target in (a.id, child.id):
        body = error(
            await owner.patch(f"{org.base}/groups/{a.id}", json={"parent_id": target}), 422
        )
        assert body["details"]["field"] == "parent_id"
    error(await owner.patch(f"{org.base}/groups/{org.root}", json={"name": "x"}), 422)
    error(await owner.delete(f"{org.base}/groups/{org.root}"), 422)


async def test_only_empty_groups_are_deleted_unless_their_keys_are_disabled(owner: Api) -> None:
    org = await make_org_as(owner)
    team = await add_group(org, "team")
    child = await add_group(org, "child", team.id)
    body = error(await owner.delete(f"{org.base}/groups/{team.id}"), 409)
    assert body["details"] == {"subgroups": 1, "members": 0, "keys": 0}
    key = ok(await owner.post(f"{org.base}/keys", json={"name": "k", "group_id": child.id}), 201)
    body = error(await owner.delete(f"{org.base}/groups/{child.id}"), 409)
    assert body["details"]["keys"] == 1 and "disable_keys=true" in body["message"]
    deleted = ok(
        await owner.delete(f"{org.base}/groups/{child.id}", params={"disable_keys": "true"})
    )
    assert deleted == {"disabled_key_ids": [key["id"]]}
    assert ok(await owner.get(f"{org.base}/keys/{key['id']}"))["status"] == "disabled"
    # The key cannot come back to life in a group that no longer exists.
    error(await owner.patch(f"{org.base}/keys/{key['id']}", json={"status": "active"}), 409)
    assert (await owner.delete(f"{org.base}/groups/{team.id}")).status_code == 200


async def test_a_group_with_members_homed_in_it_is_not_deleted(owner: Api) -> None:
    org = await make_org_as(owner)
    team = await add_group(org, "team")
    await join(org, "member", team.id)
    body = error(await owner.delete(f"{org.base}/groups/{team.id}"), 409)
    assert body["details"]["members"] == 1


async def test_a_deleted_org_is_gone_for_everyone(owner: Api) -> None:
    org = await make_org_as(owner)
    assert (await owner.delete(org.base)).status_code == 204
    error(await owner.get(org.base), 404)
    error(await owner.get(f"{org.base}/groups"), 404)
    assert org.id not in {o["id"] for o in ok(await owner.get("/api/v1/orgs"))["items"]}


async def test_unknown_ids_are_404(owner: Api) -> None:
    org = await make_org_as(owner)
    for path in (
        "/api/v1/orgs/org_01jdzzzzzzzzzzzzzzzzzzzzzz",
        "/api/v1/orgs/not-an-id",
        f"{org.base}/groups/grp_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{org.base}/members/usr_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{org.base}/keys/key_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{org.base}/keys/%00",
    ):
        assert error(await owner.get(path), 404)["code"] == "not_found", path
    body = error(
        await owner.post(f"{org.base}/groups", json={"name": "x", "parent_id": "grp_nope"}), 404
    )
    assert body["details"] == {"field": "parent_id"}


@pytest.mark.parametrize("limit", [1, 2, 5, 200])
async def test_paging_walks_every_group_once_in_order(owner: Api, limit: int) -> None:
    org = await make_org_as(owner)
    made = [(await add_group(org, f"g{i:02}")).id for i in range(11)]
    walked = [g["id"] for g in await all_pages(owner, f"{org.base}/groups", {"limit": limit})]
    assert walked == [org.root, *made]
