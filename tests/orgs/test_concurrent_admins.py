"""Admins acting at the same moment: the checks that guard uniqueness and the last owner hold
under concurrency (real Postgres, concurrent requests over one in-process app), and every
refused request is a 409, never a 500."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import ok, unique_address
from tests.factories import Org, join, make_org

CONCURRENCY = 12


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client)


async def test_one_pending_invitation_per_email_at_any_concurrency(org: Org) -> None:
    owner, base, root = org.owner, org.base, org.root
    email = unique_address()
    body = {"email": email, "role": "member", "group_id": root}
    answers = await asyncio.gather(
        *(owner.post(f"{base}/invitations", json=body) for _ in range(CONCURRENCY))
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: CONCURRENCY - 1}
    pending = ok(await owner.get(f"{base}/invitations", params={"status": "pending"}))
    assert [i["email"] for i in pending["items"]] == [email]


async def test_one_group_per_name_under_a_parent_at_any_concurrency(org: Org) -> None:
    owner, base = org.owner, org.base
    answers = await asyncio.gather(
        *(owner.post(f"{base}/groups", json={"name": "research"}) for _ in range(CONCURRENCY))
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: CONCURRENCY - 1}


async def test_two_owners_removing_each_other_at_once_leave_one_owner(org: Org) -> None:
    first, base = org.owner, org.base
    second = await join(org, "owner", org.root, name="Second")
    assert first.person is not None
    answers = await asyncio.gather(
        first.delete(f"{base}/members/{second.user_id}"),
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
    owners = [m for m in members if {"group_id": org.root, "role": "owner"} in m["roles"]]
    assert len(owners) == 1
