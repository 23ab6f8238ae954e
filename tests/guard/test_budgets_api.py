"""Budgets over the admin API: create or replace per scope and period, read with what is spent
and held, who may set them (never oneself), validation, deletion, and what the proxy does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, error, ok
from tests.factories import add_group, join, make_key, make_org

CHAT = "/v1/chat/completions"
# The mock upstream bills "hi" as 8 prompt tokens; max_tokens 16 makes it answer 16 tokens, and
# our estimate is 8 too: the reservation equals the actual cost.
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
# gpt-4o-mini: 0.15 USD / 1M input, 0.60 USD / 1M output tokens.
COST = 8 * 150 + 16 * 600  # nano-USD per call


def usd(nanos: int) -> str:
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


@dataclass
class World:
    """An org (Asia/Kathmandu) with team > project, an admin bound at team and a member homed at
    project, who made the key."""

    owner: Api
    base: str
    org_id: str
    team: str  # level 1
    project: str  # level 2, under team
    admin: Api  # admin bound at team
    member: Api  # member homed at project
    member_id: str
    key_id: str  # the member's key in project
    key: str


@pytest.fixture
async def org(runtime: Runtime, proxy_client: httpx.AsyncClient) -> World:
    made = await make_org(runtime, proxy_client, timezone="Asia/Kathmandu")
    team = (await add_group(made, "team")).id
    project = (await add_group(made, "project", team)).id
    admin = await join(made, "admin", team)
    member = await join(made, "member", project)
    key = await make_key(made, project, by=member, name="mine")
    return World(
        made.owner,
        made.base,
        made.id,
        team,
        project,
        admin,
        member,
        member.user_id,
        key.id,
        key.secret,
    )


async def call(client: httpx.AsyncClient, secret: str) -> httpx.Response:
    return await client.post(CHAT, json=BODY, headers={"authorization": f"Bearer {secret}"})


def budget(
    scope_type: str, scope_id: str | None, limit: str, period: str = "month", **more: object
) -> dict:
    return {
        "scope_type": scope_type,
        "scope_id": scope_id,
        "limit_usd": limit,
        "period": period,
        **more,
    }


async def test_put_creates_then_replaces_keeping_the_id_and_what_was_spent(
    org: World, proxy_client: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("key", org.key_id, "1", thresholds=[90, 50, 90])
        )
    )
    assert created["limit_usd"] == "1.000000000" and created["thresholds"] == [50, 90]
    assert (created["spent_usd"], created["reserved_usd"], created["remaining_usd"]) == (
        "0.000000000",
        "0.000000000",
        "1.000000000",
    )
    for _ in range(3):
        assert (await call(proxy_client, org.key)).status_code == 200
    await runtime_settled(proxy_client)
    replaced = ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("key", org.key_id, 2.5, enforcement="soft")
        )
    )
    assert replaced["id"] == created["id"] and replaced["enforcement"] == "soft"
    assert replaced["spent_usd"] == usd(3 * COST)
    assert replaced["remaining_usd"] == usd(int(2.5 * 10**9) - 3 * COST)


async def runtime_settled(client: httpx.AsyncClient) -> None:
    """Settlement runs off the response path; wait for the in-process gateway's to finish."""
    app = client._transport.app  # type: ignore[attr-defined]
    await app.state.pipeline.guard.drain()


async def test_the_period_is_the_calendar_month_in_the_org_timezone(org: World) -> None:
    shown = ok(await org.owner.put(f"{org.base}/budgets", json=budget("org", None, "100")))
    start = datetime.fromisoformat(shown["period_start"])
    end = datetime.fromisoformat(shown["period_end"])
    # Kathmandu is UTC+05:45: its months start at 18:15 UTC the day before.
    assert (start.hour, start.minute, end.hour, end.minute) == (18, 15, 18, 15)
    assert start <= datetime.now(UTC) < end
    total = ok(
        await org.owner.put(f"{org.base}/budgets", json=budget("org", org.org_id, "100", "total"))
    )
    assert total["period_start"] is None and total["period_end"] is None


async def test_a_hard_budget_blocks_with_402_naming_its_scope_and_recording_the_block(
    org: World, proxy_client: httpx.AsyncClient
) -> None:
    ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("key", org.key_id, usd(2 * COST), "day")
        )
    )
    assert [(await call(proxy_client, org.key)).status_code for _ in range(2)] == [200, 200]
    refused = await call(proxy_client, org.key)
    assert refused.status_code == 402
    body = refused.json()["error"]
    assert body["code"] == "budget_exceeded" and body["type"] == "insufficient_quota"
    assert f"daily budget of key 'mine' ({org.key_id})" in body["message"]
    assert usd(2 * COST) in body["message"]
    # Raising the limit takes effect on the next request.
    ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("key", org.key_id, usd(3 * COST), "day")
        )
    )
    assert (await call(proxy_client, org.key)).status_code == 200


async def test_a_limit_of_zero_blocks_everything(
    org: World, proxy_client: httpx.AsyncClient
) -> None:
    ok(await org.owner.put(f"{org.base}/budgets", json=budget("member", org.member_id, "0")))
    assert (await call(proxy_client, org.key)).status_code == 402


async def test_nobody_sets_their_own_limits(org: World) -> None:
    # The admin bound at team: not team itself, only what is strictly below it.
    denied = error(
        await org.admin.put(f"{org.base}/budgets", json=budget("group", org.team, "9")), 403
    )
    assert "strictly above" in denied["message"]
    ok(await org.admin.put(f"{org.base}/budgets", json=budget("group", org.project, "9")))
    ok(await org.admin.put(f"{org.base}/budgets", json=budget("member", org.member_id, "9")))
    ok(await org.admin.put(f"{org.base}/budgets", json=budget("key", org.key_id, "9")))
    error(await org.admin.put(f"{org.base}/budgets", json=budget("org", None, "9")), 403)
    # The member owns the key but may not govern it, nor themselves.
    error(await org.member.put(f"{org.base}/budgets", json=budget("key", org.key_id, "99")), 403)
    error(
        await org.member.put(f"{org.base}/budgets", json=budget("member", org.member_id, "99")), 403
    )


async def test_who_reads_which_budgets(org: World) -> None:
    key_budget = ok(await org.owner.put(f"{org.base}/budgets", json=budget("key", org.key_id, "1")))
    team_budget = ok(
        await org.owner.put(f"{org.base}/budgets", json=budget("group", org.team, "5"))
    )
    org_budget = ok(await org.owner.put(f"{org.base}/budgets", json=budget("org", None, "50")))

    def ids(page: dict) -> set[str]:
        return {item["id"] for item in page["items"]}

    everything = {key_budget["id"], team_budget["id"], org_budget["id"]}
    assert ids(ok(await org.owner.get(f"{org.base}/budgets"))) == everything
    assert ids(ok(await org.admin.get(f"{org.base}/budgets"))) == {
        key_budget["id"],
        team_budget["id"],
    }
    assert ids(ok(await org.member.get(f"{org.base}/budgets"))) == {key_budget["id"]}
    ok(await org.member.get(f"{org.base}/budgets/{key_budget['id']}"))
    error(await org.member.get(f"{org.base}/budgets/{team_budget['id']}"), 403)
    error(await org.admin.get(f"{org.base}/budgets/{org_budget['id']}"), 403)
    only_keys = ok(await org.owner.get(f"{org.base}/budgets", params={"scope_type": "key"}))
    assert ids(only_keys) == {key_budget["id"]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (budget("group", None, "1"), "scope_id"),
        (budget("org", "org_someoneelse", "1"), "scope_id"),
        (budget("key", "key_x", "-1"), "limit_usd"),
        (budget("key", "key_x", "0.0000000001"), "limit_usd"),
        (budget("key", "key_x", "ten"), "limit_usd"),
        (budget("key", "key_x", "1", "year"), "period"),
        (budget("key", "key_x", "1", thresholds=[0]), "thresholds.0"),
        (budget("key", "key_x", "1", thresholds=[101]), "thresholds.0"),
        (budget("team", "x", "1"), "scope_type"),
    ],
)
async def test_invalid_budgets_are_422_naming_the_field(org: World, body: dict, field: str) -> None:
    assert (
        error(await org.owner.put(f"{org.base}/budgets", json=body), 422)["details"]["field"]
        == field
    )


async def test_the_root_group_is_the_org_scope(org: World, runtime: Runtime) -> None:
    root = ok(await org.owner.get(org.base))["root_group_id"]
    problem = error(
        await org.owner.put(f"{org.base}/budgets", json=budget("group", root, "1")), 422
    )
    assert "scope_type 'org'" in problem["message"]


async def test_unknown_and_foreign_scopes_are_404(
    org: World, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    theirs = await make_org(runtime, proxy_client, "Other")
    other = theirs.owner
    their_group = await add_group(theirs, "g")
    for body in (
        budget("group", their_group.id, "1"),
        budget("key", "key_unknown", "1"),
        budget("member", "usr_unknown", "1"),
    ):
        assert (
            error(await org.owner.put(f"{org.base}/budgets", json=body), 404)["details"]["field"]
            == "scope_id"
        )
    mine = ok(await org.owner.put(f"{org.base}/budgets", json=budget("key", org.key_id, "1")))
    error(await other.get(f"{org.base}/budgets/{mine['id']}"), 404)
    error(await other.delete(f"{org.base}/budgets/{mine['id']}"), 404)
    error(await other.get(f"{theirs.base}/budgets/{mine['id']}"), 404)


async def test_delete_lifts_the_limit_and_is_audited(
    org: World, proxy_client: httpx.AsyncClient
) -> None:
    made = ok(await org.owner.put(f"{org.base}/budgets", json=budget("key", org.key_id, "0")))
    assert (await call(proxy_client, org.key)).status_code == 402
    error(await org.member.delete(f"{org.base}/budgets/{made['id']}"), 403)
    assert (await org.owner.delete(f"{org.base}/budgets/{made['id']}")).status_code == 204
    assert (await call(proxy_client, org.key)).status_code == 200
    error(await org.owner.get(f"{org.base}/budgets/{made['id']}"), 404)
    events = ok(await org.owner.get(f"{org.base}/audit", params={"target_id": made["id"]}))["items"]
    assert sorted(event["action"] for event in events) == ["budget.create", "budget.delete"]


async def test_the_default_member_budget_applies_to_members_without_their_own(
    org: World, proxy_client: httpx.AsyncClient
) -> None:
    default = ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("member_default", None, usd(COST), "week")
        )
    )
    assert default["spent_usd"] is None and default["scope_id"] == org.org_id
    error(await org.admin.put(f"{org.base}/budgets", json=budget("member_default", None, "9")), 403)
    assert (await call(proxy_client, org.key)).status_code == 200
    refused = await call(proxy_client, org.key)
    assert refused.status_code == 402
    assert "default member budget" in refused.json()["error"]["message"]
    # A budget of the member's own for that period replaces the default.
    ok(
        await org.owner.put(
            f"{org.base}/budgets", json=budget("member", org.member_id, "1", "week")
        )
    )
    assert (await call(proxy_client, org.key)).status_code == 200
