"""Who reads whose usage in analytics: owners the whole org, admins and viewers their subtree,
members their own usage (the org's once it opens its usage to members), in every view and
export; one member's or key's statistics only for those who read that member or key (403
otherwise); and another org's analytics are 404, as ids that do not exist."""

from __future__ import annotations

import csv
import io

import httpx

from sluicegate.core.money import nanos_to_usd, usd_to_nanos
from sluicegate.runtime import Runtime
from tests.admin import Api, error, ok
from tests.analytics.conftest import (
    MEMBER1_COST,
    MEMBER2_COST,
    TOTAL_COST,
    WINDOW,
    World,
    build_world,
    store,
    usage_of,
)

OWNER_COST = TOTAL_COST - MEMBER1_COST - MEMBER2_COST


async def spend(api: Api, world: World, path: str = "activity", **params: str) -> int:
    body = ok(await api.get(world.api(path), params={**WINDOW, **params}))
    return usd_to_nanos(body["totals"]["cost_usd"])


async def member_ids(api: Api, world: World) -> list[str]:
    body = ok(await api.get(world.api("members"), params=WINDOW))
    return [row["user_id"] for row in body["items"]]


def exported_cost(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    return sum(usd_to_nanos(row["cost_usd"]) for row in rows)


async def test_owner_reads_the_whole_org(world: World) -> None:
    assert await spend(world.owner, world) == TOTAL_COST
    assert await spend(world.owner, world, "members") == TOTAL_COST
    assert await member_ids(world.owner, world) == [
        world.member1_id,
        world.member2_id,
        world.owner_id,
    ]


async def test_admin_and_viewer_read_only_their_subtree(world: World) -> None:
    # Admin A at team A: project A1 (member 1's keys); not team B, not the root key.
    assert await spend(world.admin_a, world) == MEMBER1_COST
    assert await member_ids(world.admin_a, world) == [world.member1_id]
    body = ok(
        await world.admin_a.get(world.api("activity"), params={**WINDOW, "groupBy": "project"})
    )
    assert [group["id"] for group in body["groups"]] == [world.project_a]
    assert body["cards"]["active_members"] == 1
    # A filter never widens what the caller reads.
    assert await spend(world.admin_a, world, group_id=world.team_b) == 0
    assert await spend(world.admin_a, world, user_id=world.member2_id) == 0
    assert await spend(world.admin_a, world, key_id=world.key0) == 0
    # Viewer B at team B: member 2's key only.
    assert await spend(world.viewer_b, world) == MEMBER2_COST
    assert await member_ids(world.viewer_b, world) == [world.member2_id]
    # Exports hold what the JSON holds.
    assert exported_cost(await world.admin_a.get(world.api("activity.csv"), params=WINDOW)) == (
        MEMBER1_COST
    )
    assert exported_cost(await world.viewer_b.get(world.api("members.csv"), params=WINDOW)) == (
        MEMBER2_COST
    )


async def test_admin_and_viewer_read_members_and_keys_of_their_subtree_only(
    world: World,
) -> None:
    detail = ok(await world.admin_a.get(world.api(f"members/{world.member1_id}"), params=WINDOW))
    assert detail["cards"]["total_spend_usd"] == nanos_to_usd(MEMBER1_COST)
    key = ok(await world.viewer_b.get(world.api(f"keys/{world.key2}"), params=WINDOW))
    assert key["totals"]["cost_usd"] == nanos_to_usd(MEMBER2_COST)
    for api, path in (
        (world.admin_a, f"members/{world.member2_id}"),
        (world.admin_a, f"members/{world.owner_id}"),
        (world.admin_a, f"keys/{world.key2}"),
        (world.admin_a, f"keys/{world.key0}.csv"),
        (world.viewer_b, f"members/{world.member1_id}"),
        (world.viewer_b, f"members/{world.member1_id}.pdf"),
        (world.viewer_b, f"keys/{world.key1}"),
    ):
        problem = error(await api.get(world.api(path), params=WINDOW), 403)
        assert problem["details"]["action"] == "usage.read", path


async def test_a_member_reads_only_their_own_usage(world: World) -> None:
    assert await spend(world.member1, world) == MEMBER1_COST
    assert await spend(world.member2, world) == MEMBER2_COST
    assert await member_ids(world.member1, world) == [world.member1_id]
    assert await spend(world.member2, world, "members") == MEMBER2_COST
    assert await spend(world.member1, world, user_id=world.member2_id) == 0
    assert exported_cost(await world.member2.get(world.api("activity.csv"), params=WINDOW)) == (
        MEMBER2_COST
    )
    mine = ok(await world.member1.get(world.api(f"members/{world.member1_id}"), params=WINDOW))
    assert mine["cards"]["total_spend_usd"] == nanos_to_usd(MEMBER1_COST)
    key = ok(await world.member1.get(world.api(f"keys/{world.key1b}"), params=WINDOW))
    assert key["totals"]["cost_usd"] == "0.010000000"


async def test_a_member_asking_for_another_member_or_key_gets_403(world: World) -> None:
    for path in (
        f"members/{world.member2_id}",
        f"members/{world.owner_id}",
        f"members/{world.member2_id}.csv",
        f"members/{world.member2_id}.pdf",
        f"keys/{world.key2}",
        f"keys/{world.key0}",
        f"keys/{world.key2}.csv",
    ):
        problem = error(await world.member1.get(world.api(path), params=WINDOW), 403)
        assert (
            problem["code"] == "permission_denied" and problem["details"]["action"] == "usage.read"
        )


async def test_an_org_that_opens_its_usage_shows_members_the_whole_org(world: World) -> None:
    settings = ok(await world.owner.patch(world.base, json={"members_see_org_feed": True}))
    assert settings["members_see_org_feed"] is True
    assert await spend(world.member1, world) == TOTAL_COST
    assert await member_ids(world.member1, world) == [
        world.member1_id,
        world.member2_id,
        world.owner_id,
    ]
    other = ok(await world.member1.get(world.api(f"members/{world.member2_id}"), params=WINDOW))
    assert other["cards"]["total_spend_usd"] == nanos_to_usd(MEMBER2_COST)
    key = ok(await world.member2.get(world.api(f"keys/{world.key0}"), params=WINDOW))
    assert key["totals"]["cost_usd"] == nanos_to_usd(OWNER_COST)
    # And closing it again narrows it back.
    ok(await world.owner.patch(world.base, json={"members_see_org_feed": False}))
    assert await spend(world.member1, world) == MEMBER1_COST
    error(await world.member1.get(world.api(f"members/{world.member2_id}"), params=WINDOW), 403)


async def test_another_orgs_admin_and_owner_get_404_on_every_analytics_view(
    world: World, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    other = await build_world(runtime, app_client, name="Other Corp")
    await store(runtime, usage_of(other))
    paths = [
        "activity",
        "activity.csv",
        "activity.pdf",
        "members",
        "members.csv",
        "members.pdf",
        f"members/{world.member1_id}",
        f"members/{world.member1_id}.csv",
        f"members/{world.member1_id}.pdf",
        f"keys/{world.key1}",
        f"keys/{world.key1}.csv",
        f"keys/{world.key1}.pdf",
    ]
    for path in paths:
        for api in (other.admin_a, other.owner, other.member1):
            problem = error(await api.get(world.api(path), params=WINDOW), 404)
            assert problem["code"] == "not_found", path
        assert (await world.owner.get(world.api(path), params=WINDOW)).status_code == 200, path
    # Org B's ids inside org A's own routes are unknown ids, and never filter in B's usage.
    for path in (f"members/{other.member1_id}", f"keys/{other.key1}", f"keys/{other.key2}.pdf"):
        error(await world.owner.get(world.api(path), params=WINDOW), 404)
    assert await spend(world.owner, world, user_id=other.member1_id) == 0
    assert await spend(world.owner, world, key_id=other.key1) == 0
    error(
        await world.owner.get(world.api("activity"), params={**WINDOW, "group_id": other.team_a}),
        404,
    )
    # Each org still reads its own usage.
    assert await spend(other.owner, other) == TOTAL_COST
