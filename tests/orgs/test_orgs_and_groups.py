"""Organizations and their group tree over the admin API: creation makes the caller owner, one
person in many orgs, settings and their validation, soft delete, tree depth on create and move,
moves that carry the subtree, and deletion only when empty (or disabling the keys inside)."""

from __future__ import annotations

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, make_person, ok


@pytest.fixture
async def owner(runtime: Runtime, app_client: httpx.AsyncClient) -> Api:
    return Api(app_client, await make_person(runtime))


async def new_org(api: Api, **fields: object) -> tuple[dict, str]:
    org = ok(await api.post("/api/v1/orgs", json={"name": "Acme", **fields}), 201)
    return org, f"/api/v1/orgs/{org['id']}"


async def new_group(api: Api, base: str, name: str, parent: str | None = None) -> dict:
    body = {"name": name} if parent is None else {"name": name, "parent_id": parent}
    return ok(await api.post(f"{base}/groups", json=body), 201)


async def test_the_creator_is_owner_homed_at_the_root(owner: Api) -> None:
    org, base = await new_org(owner, timezone="Asia/Kathmandu")
    assert org["timezone"] == "Asia/Kathmandu" and org["max_level"] == 3
    me = ok(await owner.get("/api/v1/auth/me"))
    assert me["memberships"] == [
        {
            "org_id": org["id"],
            "org_name": "Acme",
            "home_group_id": org["root_group_id"],
            "roles": [{"group_id": org["root_group_id"], "role": "owner"}],
        }
    ]
    assert ok(await owner.get(base)) == org


async def test_one_person_belongs_to_many_orgs_and_lists_them(owner: Api) -> None:
    ids = {(await new_org(owner))[0]["id"] for _ in range(3)}
    listed = await all_pages(owner, "/api/v1/orgs", {"limit": 2})
    assert {org["id"] for org in listed} == ids


async def test_an_invalid_timezone_is_422_naming_the_field(owner: Api) -> None:
    body = error(await owner.post("/api/v1/orgs", json={"name": "X", "timezone": "Mars/Base"}), 422)
    assert body["details"]["field"] == "timezone" and "timezone" in body["message"]
    _, base = await new_org(owner)
    body = error(await owner.patch(base, json={"timezone": "Europe/Nowhere"}), 422)
    assert body["details"]["field"] == "timezone"


async def test_settings_change_and_are_validated(owner: Api) -> None:
    _, base = await new_org(owner)
    changed = ok(
        await owner.patch(
            base,
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
    above = error(await owner.patch(base, json={"topup_max_level": 6}), 422)
    assert above["details"]["field"] == "topup_max_level"
    error(await owner.patch(base, json={"unknown_setting": 1}), 422)


async def test_a_group_too_deep_is_422_stating_the_limit(owner: Api) -> None:
    _, base = await new_org(owner)
    division = await new_group(owner, base, "division")
    team = await new_group(owner, base, "team", division["id"])
    project = await new_group(owner, base, "project", team["id"])
    assert [division["level"], team["level"], project["level"]] == [1, 2, 3]
    body = error(
        await owner.post(f"{base}/groups", json={"name": "deeper", "parent_id": project["id"]}), 422
    )
    assert body["details"] == {"field": "parent_id", "max_level": 3}
    assert "maximum level 3" in body["message"]


async def test_the_depth_is_configurable_per_org(owner: Api) -> None:
    _, base = await new_org(owner)
    ok(await owner.patch(base, json={"max_level": 4}))
    parent = None
    for level in range(1, 5):
        group = await new_group(owner, base, f"level {level}", parent)
        assert group["level"] == level
        parent = group["id"]
    error(await owner.post(f"{base}/groups", json={"name": "five", "parent_id": parent}), 422)
    # Lowering the limit below the deepest group is refused, naming the deepest level.
    body = error(await owner.patch(base, json={"max_level": 2}), 422)
    assert body["details"] == {"field": "max_level", "deepest_level": 4}


async def test_sibling_names_are_unique_and_a_deleted_group_frees_its_name(owner: Api) -> None:
    _, base = await new_org(owner)
    first = await new_group(owner, base, "research")
    assert error(await owner.post(f"{base}/groups", json={"name": "research"}), 409)["details"] == {
        "field": "name"
    }
    assert (await owner.delete(f"{base}/groups/{first['id']}")).status_code == 200
    again = await new_group(owner, base, "research")
    assert again["id"] != first["id"]
    error(await owner.get(f"{base}/groups/{first['id']}"), 404)


async def test_a_move_carries_the_subtree_and_keeps_the_depth_limit(owner: Api) -> None:
    _, base = await new_org(owner)
    a = await new_group(owner, base, "a")
    b = await new_group(owner, base, "b")
    team = await new_group(owner, base, "team", a["id"])
    project = await new_group(owner, base, "project", team["id"])
    moved = ok(await owner.patch(f"{base}/groups/{team['id']}", json={"parent_id": b["id"]}))
    assert moved["path"] == [b["path"][0], b["id"], team["id"]] and moved["level"] == 2
    below = ok(await owner.get(f"{base}/groups/{project['id']}"))
    assert below["path"] == [*moved["path"], project["id"]] and below["level"] == 3
    # Under a level-2 group the subtree would reach level 4.
    other_team = await new_group(owner, base, "other team", a["id"])
    body = error(
        await owner.patch(f"{base}/groups/{team['id']}", json={"parent_id": other_team["id"]}), 422
    )
    assert body["details"]["max_level"] == 3 and "level 4" in body["message"]


async def test_a_group_never_moves_under_itself_or_its_descendants(owner: Api) -> None:
    org, base = await new_org(owner)
    a = await new_group(owner, base, "a")
    child = await new_group(owner, base, "child", a["id"])
    for target in (a["id"], child["id"]):
        body = error(await owner.patch(f"{base}/groups/{a['id']}", json={"parent_id": target}), 422)
        assert body["details"]["field"] == "parent_id"
    error(await owner.patch(f"{base}/groups/{org['root_group_id']}", json={"name": "x"}), 422)
    error(await owner.delete(f"{base}/groups/{org['root_group_id']}"), 422)


async def test_only_empty_groups_are_deleted_unless_their_keys_are_disabled(owner: Api) -> None:
    _, base = await new_org(owner)
    team = await new_group(owner, base, "team")
    child = await new_group(owner, base, "child", team["id"])
    body = error(await owner.delete(f"{base}/groups/{team['id']}"), 409)
    assert body["details"] == {"subgroups": 1, "members": 0, "keys": 0}
    key = ok(await owner.post(f"{base}/keys", json={"name": "k", "group_id": child["id"]}), 201)
    body = error(await owner.delete(f"{base}/groups/{child['id']}"), 409)
    assert body["details"]["keys"] == 1 and "disable_keys=true" in body["message"]
    deleted = ok(
        await owner.delete(f"{base}/groups/{child['id']}", params={"disable_keys": "true"})
    )
    assert deleted == {"disabled_key_ids": [key["id"]]}
    assert ok(await owner.get(f"{base}/keys/{key['id']}"))["status"] == "disabled"
    # The key cannot come back to life in a group that no longer exists.
    error(await owner.patch(f"{base}/keys/{key['id']}", json={"status": "active"}), 409)
    assert (await owner.delete(f"{base}/groups/{team['id']}")).status_code == 200


async def test_a_group_with_members_homed_in_it_is_not_deleted(
    owner: Api, app_client: httpx.AsyncClient
) -> None:
    _, base = await new_org(owner)
    team = await new_group(owner, base, "team")
    invitation = ok(
        await owner.post(
            f"{base}/invitations",
            json={"email": "someone@example.com", "role": "member", "group_id": team["id"]},
        ),
        201,
    )
    ok(
        await app_client.post(
            f"/api/v1/invitations/{invitation['token']}/accept",
            json={"name": "Someone", "password": "a long password"},
        )
    )
    body = error(await owner.delete(f"{base}/groups/{team['id']}"), 409)
    assert body["details"]["members"] == 1


async def test_a_deleted_org_is_gone_for_everyone(owner: Api) -> None:
    org, base = await new_org(owner)
    assert (await owner.delete(base)).status_code == 204
    error(await owner.get(base), 404)
    error(await owner.get(f"{base}/groups"), 404)
    assert org["id"] not in {o["id"] for o in ok(await owner.get("/api/v1/orgs"))["items"]}


async def test_unknown_ids_are_404(owner: Api) -> None:
    _, base = await new_org(owner)
    for path in (
        "/api/v1/orgs/org_01jdzzzzzzzzzzzzzzzzzzzzzz",
        "/api/v1/orgs/not-an-id",
        f"{base}/groups/grp_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{base}/members/usr_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{base}/keys/key_01jdzzzzzzzzzzzzzzzzzzzzzz",
        f"{base}/keys/%00",
    ):
        assert error(await owner.get(path), 404)["code"] == "not_found", path
    body = error(
        await owner.post(f"{base}/groups", json={"name": "x", "parent_id": "grp_nope"}), 404
    )
    assert body["details"] == {"field": "parent_id"}


@pytest.mark.parametrize("limit", [1, 2, 5, 200])
async def test_paging_walks_every_group_once_in_order(owner: Api, limit: int) -> None:
    org, base = await new_org(owner)
    made = [(await new_group(owner, base, f"g{i:02}"))["id"] for i in range(11)]
    walked = [g["id"] for g in await all_pages(owner, f"{base}/groups", {"limit": limit})]
    assert walked == [org["root_group_id"], *made]
