"""The audit trail over the admin API: every mutation leaves one event (actor, action, target,
before/after, IP, user agent, request id) in its own transaction, the list filters and pages
newest first, readers see their subtree only, and an edit made with SQL is named by verify."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from sluicegate.audit.models import AuditEvent
from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, make_person, ok, unique_address
from tests.factories import add_group, join, make_key, make_org_as

PASSWORD = "a long enough password"


async def actions(api: Api, base: str, **params: object) -> list[str]:
    events = await all_pages(api, f"{base}/audit", {"limit": 200, **params})
    return [event["action"] for event in reversed(events)]


@pytest.fixture
async def owner(runtime: Runtime, app_client: httpx.AsyncClient) -> Api:
    return Api(app_client, await make_person(runtime))


async def test_every_mutation_leaves_exactly_one_event(
    owner: Api, app_client: httpx.AsyncClient
) -> None:
    org = ok(await owner.post("/api/v1/orgs", json={"name": "Acme"}), 201)
    base = f"/api/v1/orgs/{org['id']}"
    ok(await owner.patch(base, json={"timezone": "Europe/Paris"}))
    team = ok(await owner.post(f"{base}/groups", json={"name": "team"}), 201)
    other = ok(await owner.post(f"{base}/groups", json={"name": "other"}), 201)
    ok(await owner.patch(f"{base}/groups/{other['id']}", json={"name": "renamed"}))
    ok(await owner.patch(f"{base}/groups/{other['id']}", json={"parent_id": team["id"]}))
    email = unique_address()
    invitation = ok(
        await owner.post(
            f"{base}/invitations", json={"email": email, "role": "member", "group_id": team["id"]}
        ),
        201,
    )
    joined = ok(
        await app_client.post(
            f"/api/v1/invitations/{invitation['token']}/accept",
            json={"name": "M", "password": PASSWORD},
        )
    )
    member = joined["user_id"]
    dropped = ok(
        await owner.post(
            f"{base}/invitations",
            json={"email": unique_address(), "role": "viewer", "group_id": team["id"]},
        ),
        201,
    )
    await owner.delete(f"{base}/invitations/{dropped['id']}")
    ok(
        await owner.put(
            f"{base}/members/{member}/roles", json={"group_id": other["id"], "role": "viewer"}
        )
    )
    ok(await owner.delete(f"{base}/members/{member}/roles/{other['id']}"))
    ok(await owner.patch(f"{base}/members/{member}", json={"home_group_id": other["id"]}))
    key = ok(
        await owner.post(
            f"{base}/keys", json={"name": "k", "group_id": team["id"], "owner_user_id": member}
        ),
        201,
    )
    ok(await owner.patch(f"{base}/keys/{key['id']}", json={"status": "disabled"}))
    ok(await owner.post(f"{base}/keys/{key['id']}/rotate"))
    await owner.delete(f"{base}/keys/{key['id']}")
    await owner.delete(f"{base}/members/{member}")
    await owner.delete(f"{base}/groups/{other['id']}")
    # A refused mutation leaves nothing: its transaction rolled back.
    error(await owner.post(f"{base}/groups", json={"name": "team"}), 409)
    error(await owner.delete(f"{base}/groups/{org['root_group_id']}"), 422)
    assert await actions(owner, base) == [
        "org.create",
        "org.update",
        "group.create",
        "group.create",
        "group.update",
        "group.move",
        "invitation.create",
        "member.join",
        "invitation.create",
        "invitation.revoke",
        "role.grant",
        "role.revoke",
        "member.update",
        "key.create",
        "key.update",
        "key.rotate",
        "key.delete",
        "member.remove",
        "group.delete",
    ]
    verified = ok(await owner.get(f"{base}/audit/verify"))
    assert verified == {
        "chain": org["id"],
        "intact": True,
        "checked": 19,
        "broken_event_id": None,
        "broken_seq": None,
        "problem": None,
    }


async def test_an_event_names_who_what_where_and_from_where(owner: Api) -> None:
    org = await make_org_as(owner)
    base = org.base
    headers = {"user-agent": "ops-script/1.0", "x-request-id": "change-4711"}
    ok(await owner.patch(base, json={"name": "Acme Corp"}, headers=headers))
    event = (await all_pages(owner, f"{base}/audit", {"action": "org.update"}))[0]
    assert owner.person is not None
    assert event["actor_user_id"] == owner.person.user_id
    assert (event["target_type"], event["target_id"]) == ("organization", org.id)
    assert event["before"]["name"] == "Acme" and event["after"]["name"] == "Acme Corp"
    assert (event["user_agent"], event["request_id"]) == ("ops-script/1.0", "change-4711")
    assert event["ip"] == "127.0.0.1"
    assert event["seq"] == 2 and len(event["hash"]) == 64


async def test_filters_and_pages_cover_the_trail_once_newest_first(owner: Api) -> None:
    org = await make_org_as(owner)
    base = org.base
    groups = [ok(await owner.post(f"{base}/groups", json={"name": f"g{i}"}), 201) for i in range(7)]
    paged = await all_pages(owner, f"{base}/audit", {"limit": 3})
    assert [e["seq"] for e in paged] == list(range(8, 0, -1))
    assert len(await all_pages(owner, f"{base}/audit", {"action": "group"})) == 7
    one = await all_pages(owner, f"{base}/audit", {"target_id": groups[3]["id"]})
    assert [e["target_id"] for e in one] == [groups[3]["id"]]
    middle = paged[3]["created_at"]
    since = await all_pages(owner, f"{base}/audit", {"since": middle})
    until = await all_pages(owner, f"{base}/audit", {"until": middle})
    assert len(since) + len(until) == 8
    bad = error(await owner.get(f"{base}/audit", params={"cursor": "not-a-cursor"}), 422)
    assert bad["details"]["field"] == "cursor"


async def test_readers_see_their_subtree_and_members_see_nothing(owner: Api) -> None:
    org = await make_org_as(owner)
    base = org.base
    east = await add_group(org, "east")
    west = await add_group(org, "west")
    await make_key(org, east.id, name="east key")
    await make_key(org, west.id, name="west key")
    east_viewer = await join(org, "viewer", east.id)
    finance = await join(org, "viewer", org.root)
    member = await join(org, "member", east.id)
    seen = await all_pages(east_viewer, f"{base}/audit", {"limit": 200})
    assert {e["group_id"] for e in seen} == {east.id}
    assert {e["action"] for e in seen} >= {"group.create", "key.create", "member.join"}
    everything = await all_pages(finance, f"{base}/audit", {"limit": 200})
    assert {west.id, org.root} <= {e["group_id"] for e in everything}
    error(await member.get(f"{base}/audit"), 403)
    error(await east_viewer.get(f"{base}/audit/verify"), 403)
    assert ok(await finance.get(f"{base}/audit/verify"))["intact"] is True


async def test_an_sql_edit_of_one_row_is_reported_at_exactly_that_row(
    runtime: Runtime, owner: Api
) -> None:
    org = await make_org_as(owner)
    base = org.base
    for i in range(5):
        ok(await owner.post(f"{base}/groups", json={"name": f"g{i}"}), 201)
    events = await all_pages(owner, f"{base}/audit")
    victim = next(e for e in events if e["seq"] == 4)
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == victim["id"])
            .values(after={"name": "quietly changed", "parent_id": None, "level": 1})
        )
    report = ok(await owner.get(f"{base}/audit/verify"))
    assert report["intact"] is False
    assert (report["broken_event_id"], report["broken_seq"], report["checked"]) == (
        victim["id"],
        4,
        3,
    )


async def test_identity_events_form_the_platform_chain(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    platform = Api(app_client, await make_person(runtime, platform_admin=True))
    person = await make_person(runtime, password=PASSWORD)
    ok(
        await app_client.post(
            "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
        )
    )
    created = ok(
        await Api(app_client, person).post("/api/v1/auth/tokens", json={"name": "ci"}), 201
    )
    mine = await all_pages(platform, "/api/v1/audit", {"actor_user_id": person.user_id})
    assert [e["action"] for e in reversed(mine)] == ["auth.login", "token.create"]
    assert created["token"] not in str(mine)
    assert ok(await platform.get("/api/v1/audit/verify"))["intact"] is True
    error(await Api(app_client, person).get("/api/v1/audit"), 403)
