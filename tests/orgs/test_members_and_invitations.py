"""Members and invitations: invite by email (one pending per email), accept as a new or an
existing person, list members with roles, home group and key count, change the home group, grant
and take back roles (never more than one holds), remove a member (keys disabled, usage kept)."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from sluicegate.orgs.models import Invitation
from sluicegate.runtime import Runtime
from tests.admin import Api, error, make_person, ok, unique_address
from tests.factories import PASSWORD, Org, add_group, join, make_org


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=2)


async def invite(api: Api, org: Org, email: str, role: str, group: str) -> httpx.Response:
    return await api.post(
        f"{org.base}/invitations", json={"email": email, "role": role, "group_id": group}
    )


async def test_a_new_person_accepts_and_is_homed_with_the_role(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "viewer", org.division, name="Joiner")
    assert member.person is not None
    shown = ok(await org.owner.get(f"{org.base}/members/{member.person.user_id}"))
    assert shown["home_group_id"] == org.division and shown["status"] == "active"
    assert shown["roles"] == [{"group_id": org.division, "role": "viewer"}]
    assert shown["name"] == "Joiner" and shown["key_count"] == 0
    # The session returned by the acceptance works, and the password logs in.
    ok(await member.get(org.base))
    ok(
        await app_client.post(
            "/api/v1/auth/login", json={"email": member.person.email, "password": PASSWORD}
        )
    )


async def test_re_inviting_a_pending_email_is_409_until_revoked_or_expired(
    org: Org, runtime: Runtime
) -> None:
    email = unique_address()
    first = ok(await invite(org.owner, org, email, "member", org.team), 201)
    body = error(await invite(org.owner, org, email.upper(), "viewer", org.team), 409)
    assert body["details"] == {"invitation_id": first["id"]}
    assert (await org.owner.delete(f"{org.base}/invitations/{first['id']}")).status_code == 204
    second = ok(await invite(org.owner, org, email, "member", org.team), 201)
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(Invitation)
            .where(Invitation.id == second["id"])
            .values(expires_at=runtime.clock.now() - timedelta(seconds=1))
        )
    listed = ok(await org.owner.get(f"{org.base}/invitations", params={"status": "expired"}))
    assert second["id"] in {i["id"] for i in listed["items"]}
    ok(await invite(org.owner, org, email, "member", org.team), 201)


async def test_an_expired_revoked_or_used_invitation_cannot_be_accepted(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    used = ok(await invite(org.owner, org, unique_address(), "member", org.team), 201)
    accept = {"name": "N", "password": PASSWORD}
    ok(await app_client.post(f"/api/v1/invitations/{used['token']}/accept", json=accept))
    assert (
        "accepted"
        in error(
            await app_client.post(f"/api/v1/invitations/{used['token']}/accept", json=accept), 409
        )["message"]
    )
    revoked = ok(await invite(org.owner, org, unique_address(), "member", org.team), 201)
    await org.owner.delete(f"{org.base}/invitations/{revoked['id']}")
    error(await app_client.post(f"/api/v1/invitations/{revoked['token']}/accept", json=accept), 409)
    error(await app_client.post("/api/v1/invitations/sg-inv-nope/accept", json=accept), 404)
    fresh = ok(await invite(org.owner, org, unique_address(), "member", org.team), 201)
    missing = await app_client.post(
        f"/api/v1/invitations/{fresh['token']}/accept", json={"name": "N"}
    )
    assert error(missing, 422)["details"]["field"] == "password"


async def test_an_existing_person_proves_the_account_is_theirs(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    existing = await make_person(runtime, password=PASSWORD)
    invitation = ok(await invite(org.owner, org, existing.email, "member", org.team), 201)
    url = f"/api/v1/invitations/{invitation['token']}/accept"
    # Holding the invitation is not enough to take over the account.
    error(await app_client.post(url, json={"name": "Mallory", "password": "guessed password"}), 401)
    error(await app_client.post(url, json={}), 401)
    accepted = ok(await app_client.post(url, json={"password": PASSWORD}))
    assert accepted["user_id"] == existing.user_id
    # Signed in to another account, the invitation of an address is refused.
    other = ok(await invite(org.owner, org, unique_address(), "member", org.team), 201)
    stranger = await make_person(runtime)
    error(
        await app_client.post(
            f"/api/v1/invitations/{other['token']}/accept", json={}, headers=stranger.headers
        ),
        403,
    )


async def test_a_signed_in_person_accepts_without_a_password(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    existing = await make_person(runtime)  # no password at all, as after `bootstrap`
    invitation = ok(await invite(org.owner, org, existing.email, "admin", org.division), 201)
    accepted = await app_client.post(
        f"/api/v1/invitations/{invitation['token']}/accept", json={}, headers=existing.headers
    )
    assert ok(accepted)["user_id"] == existing.user_id


async def test_inviting_a_member_again_is_409(org: Org, app_client: httpx.AsyncClient) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    error(await invite(org.owner, org, member.person.email, "viewer", org.root), 409)


async def test_members_list_shows_roles_home_and_key_count(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    for name in ("one", "two"):
        ok(await member.post(f"{org.base}/keys", json={"name": name, "group_id": org.team}), 201)
    listed = ok(await org.owner.get(f"{org.base}/members"))["items"]
    row = next(m for m in listed if m["user_id"] == member.person.user_id)
    assert row["key_count"] == 2 and row["roles"] == [{"group_id": org.team, "role": "member"}]
    in_team = ok(await org.owner.get(f"{org.base}/members", params={"group_id": org.team}))
    assert [m["user_id"] for m in in_team["items"]] == [member.person.user_id]


async def test_the_home_group_changes(org: Org, app_client: httpx.AsyncClient) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    moved = ok(
        await org.owner.patch(
            f"{org.base}/members/{member.person.user_id}", json={"home_group_id": org.division}
        )
    )
    assert moved["home_group_id"] == org.division
    error(
        await org.owner.patch(
            f"{org.base}/members/{member.person.user_id}", json={"home_group_id": "grp_nope"}
        ),
        404,
    )


async def test_removing_a_member_disables_their_keys_and_keeps_the_row(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    key = ok(await member.post(f"{org.base}/keys", json={"name": "k", "group_id": org.team}), 201)
    assert (
        await org.owner.delete(f"{org.base}/members/{member.person.user_id}")
    ).status_code == 204
    assert ok(await org.owner.get(f"{org.base}/keys/{key['id']}"))["status"] == "disabled"
    gone = ok(await org.owner.get(f"{org.base}/members/{member.person.user_id}"))
    assert gone["status"] == "removed" and gone["roles"] == [] and gone["removed_at"]
    error(await member.get(org.base), 404)
    removed = ok(await org.owner.get(f"{org.base}/members", params={"status": "removed"}))
    assert [m["user_id"] for m in removed["items"]] == [member.person.user_id]
    error(await org.owner.patch(f"{org.base}/keys/{key['id']}", json={"status": "active"}), 409)


async def test_a_removed_member_can_be_invited_back(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    await org.owner.delete(f"{org.base}/members/{member.person.user_id}")
    again = ok(await invite(org.owner, org, member.person.email, "viewer", org.division), 201)
    ok(
        await app_client.post(
            f"/api/v1/invitations/{again['token']}/accept", json={"password": PASSWORD}
        )
    )
    back = ok(await org.owner.get(f"{org.base}/members/{member.person.user_id}"))
    assert back["status"] == "active" and back["roles"] == [
        {"group_id": org.division, "role": "viewer"}
    ]


async def test_a_member_may_leave_but_the_last_owner_may_not(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None and org.owner.person is not None
    assert (await member.delete(f"{org.base}/members/{member.person.user_id}")).status_code == 204
    body = error(await org.owner.delete(f"{org.base}/members/{org.owner.person.user_id}"), 409)
    assert "last owner" in body["message"]
    # With a second owner, the first may step down.
    second = await join(org, "owner", org.root)
    assert second.person is not None
    ok(await org.owner.delete(f"{org.base}/members/{org.owner.person.user_id}"), 204)


async def test_roles_are_granted_and_taken_back_but_never_the_last_one(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    member = await join(org, "member", org.team)
    assert member.person is not None
    roles = f"{org.base}/members/{member.person.user_id}/roles"
    granted = ok(await org.owner.put(roles, json={"group_id": org.root, "role": "viewer"}))
    assert {(r["group_id"], r["role"]) for r in granted["roles"]} == {
        (org.team, "member"),
        (org.root, "viewer"),
    }
    replaced = ok(await org.owner.put(roles, json={"group_id": org.team, "role": "admin"}))
    assert (org.team, "admin") in {(r["group_id"], r["role"]) for r in replaced["roles"]}
    ok(await org.owner.delete(f"{roles}/{org.root}"))
    assert "only role" in error(await org.owner.delete(f"{roles}/{org.team}"), 409)["message"]
    error(await org.owner.delete(f"{roles}/{org.division}"), 404)
    body = error(await org.owner.put(roles, json={"group_id": org.team, "role": "owner"}), 422)
    assert body["details"]["field"] == "role"


async def test_nobody_grants_more_than_they_hold(org: Org, app_client: httpx.AsyncClient) -> None:
    admin = await join(org, "admin", org.division)
    member = await join(org, "member", org.team)
    assert member.person is not None
    roles = f"{org.base}/members/{member.person.user_id}/roles"
    # An admin grants member and viewer at its own node and below, admin only strictly below.
    ok(await admin.put(roles, json={"group_id": org.division, "role": "viewer"}))
    ok(await admin.put(roles, json={"group_id": org.team, "role": "admin"}))
    error(await admin.put(roles, json={"group_id": org.division, "role": "admin"}), 403)
    error(await admin.put(roles, json={"group_id": org.root, "role": "owner"}), 403)
    error(await invite(admin, org, unique_address(), "admin", org.division), 403)
    error(await invite(admin, org, unique_address(), "owner", org.root), 403)
    ok(await invite(admin, org, unique_address(), "admin", org.team), 201)
    # Nor does it manage a peer admin at its own node.
    peer = await join(org, "admin", org.division)
    assert peer.person is not None
    error(await admin.delete(f"{org.base}/members/{peer.person.user_id}"), 403)


async def test_a_group_holding_someones_only_role_is_not_deleted(
    org: Org, app_client: httpx.AsyncClient
) -> None:
    project = await add_group(org, "p", org.team)
    member = await join(org, "viewer", org.team)
    assert member.person is not None
    roles = f"{org.base}/members/{member.person.user_id}/roles"
    ok(await org.owner.put(roles, json={"group_id": project.id, "role": "member"}))
    ok(await org.owner.delete(f"{roles}/{org.team}"))
    # Homed at the team, but the project holds their only role now.
    body = error(await org.owner.delete(f"{org.base}/groups/{project.id}"), 409)
    assert body["details"] == {"members": [member.person.user_id]}
    ok(await org.owner.put(roles, json={"group_id": org.team, "role": "viewer"}))
    ok(await org.owner.delete(f"{org.base}/groups/{project.id}"))
    shown = ok(await org.owner.get(f"{org.base}/members/{member.person.user_id}"))
    assert shown["roles"] == [{"group_id": org.team, "role": "viewer"}]
