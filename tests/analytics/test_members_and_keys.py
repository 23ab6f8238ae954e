"""The members table, one member's and one key's statistics over the admin API: the sums of the
world's usage per member and key, the largest spend first, cursor pages that hold every member
once, the cards and tops of a member, a key's error rate, 404 for ids the org never had and 422
naming the bad parameter."""

from __future__ import annotations

from typing import Any

from sluicegate.core.money import nanos_to_usd
from sluicegate.core.pagination import encode_cursor
from tests.admin import error, ok
from tests.analytics.conftest import (
    DAY_1,
    MEMBER1_COST,
    MEMBER2_COST,
    TOTAL_COST,
    WINDOW,
    World,
    event,
    store,
)

OWNER_COST = 7_000_000


def rows_by_user(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["user_id"]: row for row in body["items"]}


async def test_members_are_listed_by_spend_with_their_sums_and_keys(world: World) -> None:
    body = ok(await world.owner.get(world.api("members"), params=WINDOW))
    assert [row["user_id"] for row in body["items"]] == [
        world.member1_id,
        world.member2_id,
        world.owner_id,
    ]
    assert body["next_cursor"] is None
    assert body["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST)
    assert body["read_from"] == "daily_rollups" and body["timezone"] == "Europe/Berlin"
    rows = rows_by_user(body)
    one = rows[world.member1_id]
    assert one["name"] == "Member One" and one["email"].startswith("member-one-")
    assert one["label"] == f"Member One <{one['email']}>"
    assert {k: v for k, v in one.items() if k not in ("user_id", "name", "email", "label")} == {
        "cost_usd": nanos_to_usd(MEMBER1_COST),
        "requests": 7,
        "errors": 1,
        "blocked": 1,
        "error_rate": 0.1429,  # 1 failed of 7 (the blocked one is no error)
        "tokens": 3 * 150 + 2 * 1200,
        "prompt_tokens": 3 * 100 + 2 * 1000,
        "completion_tokens": 3 * 50 + 2 * 200,
        "key_count": 2,
    }
    two = rows[world.member2_id]
    assert (two["cost_usd"], two["requests"], two["tokens"]) == (
        nanos_to_usd(MEMBER2_COST),
        4,
        1600,
    )
    assert (two["error_rate"], two["key_count"]) == (0.0, 1)
    mine = rows[world.owner_id]
    assert (mine["cost_usd"], mine["requests"], mine["tokens"], mine["key_count"]) == (
        nanos_to_usd(OWNER_COST),
        1,
        10,
        1,
    )
    # The rows add up to the totals.
    assert sum(row["requests"] for row in body["items"]) == body["totals"]["requests"]
    assert sum(row["tokens"] for row in body["items"]) == body["totals"]["tokens"]


async def test_a_revoked_key_is_not_counted_and_filters_narrow_the_members(world: World) -> None:
    ok(await world.owner.delete(f"{world.base}/keys/{world.key1b}"), 204)
    body = ok(await world.owner.get(world.api("members"), params=WINDOW))
    rows = rows_by_user(body)
    assert rows[world.member1_id]["key_count"] == 1
    # Its usage stays.
    assert rows[world.member1_id]["cost_usd"] == nanos_to_usd(MEMBER1_COST)
    team_b = ok(
        await world.owner.get(world.api("members"), params={**WINDOW, "group_id": world.team_b})
    )
    assert [row["user_id"] for row in team_b["items"]] == [world.member2_id]
    assert team_b["totals"]["cost_usd"] == nanos_to_usd(MEMBER2_COST)
    claude = ok(
        await world.owner.get(world.api("members"), params={**WINDOW, "model": "claude-sonnet"})
    )
    assert [(r["user_id"], r["cost_usd"]) for r in claude["items"]] == [
        (world.member1_id, "0.010000000")
    ]


async def test_members_pages_hold_every_member_once_in_order(world: World) -> None:
    # The owner makes the most requests and tokens but spends the least: spend orders the rows.
    free = [
        event(world.org_id, world.root, world.key0, world.owner_id, DAY_1, prompt=10_000)
        for _ in range(20)
    ]
    await store(world.runtime, free)
    whole = ok(await world.owner.get(world.api("members"), params=WINDOW))["items"]
    assert [(row["user_id"], row["requests"]) for row in whole] == [
        (world.member1_id, 7),
        (world.member2_id, 4),
        (world.owner_id, 21),
    ]
    for limit in (1, 2):
        seen, cursor, pages = [], None, 0
        while True:
            params = {**WINDOW, "limit": limit}
            if cursor:
                params["cursor"] = cursor
            page = ok(await world.owner.get(world.api("members"), params=params))
            assert len(page["items"]) <= limit
            # Every page states the whole window's totals, not the page's.
            assert page["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST)
            seen += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == whole
        assert pages == -(-len(whole) // limit)


async def test_member_detail_shows_cards_tops_and_cost_by_model(world: World) -> None:
    body = ok(await world.owner.get(world.api(f"members/{world.member1_id}"), params=WINDOW))
    assert body["member"]["user_id"] == world.member1_id
    assert body["member"]["key_count"] == 2
    assert body["member"]["cost_usd"] == nanos_to_usd(MEMBER1_COST)
    cards = body["cards"]
    assert (cards["total_spend_usd"], cards["requests"], cards["tokens"]) == (
        nanos_to_usd(MEMBER1_COST),
        7,
        2850,
    )
    assert cards["error_rate"] == 0.1429 and cards["models_in_use"] == 2
    assert cards["active_members"] == 1
    assert body["top_model"]["id"] == "claude-sonnet"
    assert body["top_model"]["totals"]["cost_usd"] == "0.010000000"
    assert (body["top_provider"]["id"], body["top_provider"]["label"]) == (
        "anthropic",
        "anthropic",
    )
    assert [(g["id"], g["totals"]["cost_usd"]) for g in body["by_model"]] == [
        ("claude-sonnet", "0.010000000"),
        ("gpt-4o-mini", "0.003000000"),
    ]
    # Day 1 holds the gpt-4o-mini calls, day 2 the claude ones.
    assert [(p["bucket_start"], p["group_id"], p["cost_usd"]) for p in body["series"]] == [
        ("2026-02-09T23:00:00Z", "gpt-4o-mini", "0.003000000"),
        ("2026-02-10T23:00:00Z", "claude-sonnet", "0.010000000"),
    ]
    # Usage without an app tops member 1's apps (claude, 0.01) over app-x (0.003, more calls).
    assert (body["top_app"]["id"], body["top_app"]["label"]) == ("", "(no app)")
    two = ok(await world.owner.get(world.api(f"members/{world.member2_id}"), params=WINDOW))
    assert (two["top_app"]["id"], two["top_app"]["label"]) == ("app-y", "app-y")
    assert two["top_model"]["id"] == "gpt-4o-mini" and two["top_provider"]["id"] == "openai"
    # A member without usage in the window: zeros and no tops.
    idle = ok(await world.owner.get(world.api(f"members/{world.admin_a_id}"), params=WINDOW))
    assert idle["cards"]["total_spend_usd"] == "0.000000000" and idle["by_model"] == []
    assert (idle["top_model"], idle["top_provider"], idle["top_app"]) == (None, None, None)


async def test_key_detail_shows_cost_tokens_requests_and_error_rate(world: World) -> None:
    body = ok(await world.owner.get(world.api(f"keys/{world.key1}"), params=WINDOW))
    assert body["key"]["id"] == world.key1 and body["key"]["name"] == "one"
    assert body["key"]["owner_user_id"] == world.member1_id
    assert (body["key"]["group_id"], body["key"]["status"]) == (world.project_a, "active")
    assert body["totals"] == {
        "cost_usd": "0.003000000",
        "requests": 5,
        "errors": 1,
        "blocked": 1,
        "tokens": 450,
        "prompt_tokens": 300,
        "completion_tokens": 150,
        "cached_tokens": 0,
    }
    assert body["error_rate"] == 0.2 and body["cards"]["error_rate"] == 0.2
    assert [(g["id"], g["totals"]["requests"]) for g in body["by_model"]] == [("gpt-4o-mini", 5)]
    two = ok(await world.owner.get(world.api(f"keys/{world.key2}"), params=WINDOW))
    assert (two["totals"]["cost_usd"], two["totals"]["requests"], two["error_rate"]) == (
        nanos_to_usd(MEMBER2_COST),
        4,
        0.0,
    )
    assert [(p["bucket_start"], p["cost_usd"]) for p in two["series"]] == [
        ("2026-02-09T23:00:00Z", "0.004000000"),
        ("2026-02-10T23:00:00Z", "0.004000000"),
    ]
    # A revoked key still shows its usage.
    ok(await world.owner.delete(f"{world.base}/keys/{world.key1b}"), 204)
    gone = ok(await world.owner.get(world.api(f"keys/{world.key1b}"), params=WINDOW))
    assert gone["key"]["status"] == "revoked" and gone["totals"]["cost_usd"] == "0.010000000"


async def test_unknown_members_and_keys_are_404(world: World) -> None:
    for path in (
        "members/usr_doesnotexist",
        "members/usr_doesnotexist.csv",
        "keys/key_doesnotexist",
        "keys/key_doesnotexist.pdf",
    ):
        body = error(await world.owner.get(world.api(path), params=WINDOW), 404)
        assert body["code"] == "not_found", path


BAD = [
    ("members", {"limit": 0}, "limit"),
    ("members", {"limit": 201}, "limit"),
    ("members", {"cursor": "not-a-cursor"}, "cursor"),
    ("members", {"granularity": "fortnight"}, "granularity"),
    ("members", {"from": "2026-02-30"}, "from"),
    ("members", {"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ("member", {"to": "tomorrow"}, "to"),
    ("member", {"granularity": "minute"}, "granularity"),
    ("key", {"from": "2026-02-12", "to": "2026-02-10"}, "from"),
    ("key", {"timezone": "Nowhere/Town"}, "timezone"),
    # datetime keeps microseconds: a nanosecond past midnight is not midnight
    ("key", {"from": "2026-02-10T00:00:00.000000001Z"}, "from"),
    ("members", {"to": "2026-02-11T23:00:00.0000001Z"}, "to"),
]


async def test_bad_parameters_are_422_naming_the_field(world: World) -> None:
    paths = {
        "members": "members",
        "member": f"members/{world.member1_id}",
        "key": f"keys/{world.key1}",
    }
    for view, params, field in BAD:
        body = error(await world.owner.get(world.api(paths[view]), params=params), 422)
        assert body["details"]["field"] == field, (view, params, body)
        assert body["message"].startswith(f"{field}: "), body
    # A cursor of the right shape but a negative offset is no cursor this list returned.
    body = error(
        await world.owner.get(world.api("members"), params={"cursor": encode_cursor(-1)}), 422
    )
    assert body["details"]["field"] == "cursor"
