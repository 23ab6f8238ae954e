"""Admins acting at the same moment: the checks that guard uniqueness and the last owner hold
under concurrency (real Postgres, concurrent requests over one in-process app), and every
refused request is a 409, never a 500."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, Person, make_person, ok, unique_address

CONCURRENCY = 12


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> tuple[Api, str, str]:
    owner = Api(app_client, await make_person(runtime))
    created = ok(await owner.post("/api/v1/orgs", json={"name": "Acme"}), 201)
    return owner, f"/api/v1/orgs/{created['id']}", created["root_group_id"]


async def test_one_pending_invitation_per_email_at_any_concurrency(
    org: tuple[Api, str, str],
) -> None:
    owner, base, root = org
    email = unique_address()
    body = {"email": email, "role": "member", "group_id": root}
    answers = await asyncio.gather(
        *(owner.post(f"{base}/invitations", json=body) for _ in range(CONCURRENCY))
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: CONCURRENCY - 1}
    pending = ok(await owner.get(f"{base}/invitations", params={"status": "pending"}))
    assert [i["email"] for i in pending["items"]] == [email]


async def test_one_group_per_name_under_a_parent_at_any_concurrency(
    org: tuple[Api, str, str],
) -> None:
    owner, base, _ = org
    answers = await asyncio.gather(
        *(owner.post(f"{base}/groups", json={"name": "research"}) for _ in range(CONCURRENCY))
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: CONCURRENCY - 1}


async def test_two_owners_removing_each_other_at_once_leave_one_owner(
    org: tuple[Api, str, str], app_client: httpx.AsyncClient
) -> None:
    first, base, root = org
    email = unique_address()
    invitation = ok(
        await first.post(
            f"{base}/invitations", json={"email": email, "role": "owner", "group_id": root}
        ),
        201,
    )
    joined = ok(
        await app_client.post(
            f"/api/v1/invitations/{invitation['token']}/accept",
            json={"name": "Second", "password": "a long enough password"},
        )
    )
    second = Api(app_client, Person(joined["user_id"], email, joined["token"]))
    assert first.person is not None
    answers = await asyncio.gather(
        first.delete(f"{base}/members/{joined['user_id']}"),
        second.delete(f"{base}/members/{first.person.user_id}"),
    )
    # One wins. The other is refused: 409 when both got past the membership check together (the
    # owner rows are locked and counted), 404 when it ran after the winner had removed it, 403
    # when it read its membership just before the winner's commit and its roles just after (two
    # statements, each seeing the latest commit): no role left, so too small a role.
    statuses = sorted(r.status_code for r in answers)
    assert statuses in ([204, 403], [204, 404], [204, 409]), statuses
    survivor = first if answers[0].status_code == 204 else second
    members = ok(await survivor.get(f"{base}/members"))["items"]
    owners = [m for m in members if {"group_id": root, "role": "owner"} in m["roles"]]
    assert len(owners) == 1
