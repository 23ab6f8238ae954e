"""Activity over the admin API: pivots by every dimension with labels and the groups sorted by
the chosen metric, the filters, the summary cards, the default window, and 422s naming the
field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from sluicegate.analytics import service
from sluicegate.analytics.schemas import ActivityOut, activity_json
from sluicegate.core.actors import Actor
from sluicegate.core.money import nanos_to_usd
from tests.admin import error, ok
from tests.analytics.conftest import (
    CLAUDE,
    DAY_1,
    DEPLOYMENT_USAGE,
    EU,
    MEMBER1_COST,
    MEMBER2_COST,
    TOTAL_COST,
    TOTAL_REQUESTS,
    US,
    WINDOW,
    World,
    event,
    store,
)
from tests.factories import make_key


def costs(body: dict) -> dict[str, str]:
    return {group["id"]: group["totals"]["cost_usd"] for group in body["groups"]}


async def test_activity_pivots_by_every_dimension_with_names_largest_first(world: World) -> None:
    answers = {}
    for dimension in ("model", "project", "key", "member", "provider", "app", "deployment"):
        body = ok(
            await world.owner.get(world.api("activity"), params={**WINDOW, "groupBy": dimension})
        )
        answers[dimension] = body
        assert body["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST)
        assert sum(int(g["totals"]["requests"]) for g in body["groups"]) == TOTAL_REQUESTS
        spend = [int(g["totals"]["cost_usd"].replace(".", "")) for g in body["groups"]]
        assert spend == sorted(spend, reverse=True)
    body = answers["model"]
    assert set(body) >= {"from", "to", "timezone", "granularity", "totals", "groups", "series"}
    assert body["from"] == "2026-02-09T23:00:00Z" and body["to"] == "2026-02-11T23:00:00Z"
    assert (body["timezone"], body["granularity"], body["read_from"]) == (
        "Europe/Berlin",
        "day",
        "daily_rollups",
    )
    assert body["totals"] == {
        "cost_usd": "0.028000000",
        "requests": 12,
        "errors": 1,
        "blocked": 1,
        "tokens": 4460,
        "prompt_tokens": 3510,
        "completion_tokens": 950,
        "cached_tokens": 0,
    }
    assert costs(body) == {
        "claude-sonnet": "0.010000000",
        "gpt-4o-mini": "0.011000000",
        "llama-3": "0.007000000",
    } and [g["id"] for g in body["groups"]] == ["gpt-4o-mini", "claude-sonnet", "llama-3"]
    labels = {d: {g["id"]: g["label"] for g in answers[d]["groups"]} for d in answers}
    assert labels["project"] == {
        world.project_a: "Project A1",
        world.team_b: "Team B",
        world.root: "Acme",
    }
    assert labels["key"][world.key1].startswith("one (sk-sg-")
    assert labels["member"][world.member1_id].startswith("Member One <member-one-")
    assert labels["provider"] == {"openai": "openai", "anthropic": "anthropic", "": "(no provider)"}
    assert labels["deployment"] == {US: US, CLAUDE: CLAUDE, EU: EU, "": "(no deployment)"}
    assert costs(answers["deployment"]) == {
        name: nanos_to_usd(cost) for name, (cost, _) in DEPLOYMENT_USAGE.items()
    }
    assert [g["id"] for g in answers["deployment"]["groups"]] == [CLAUDE, US, "", EU]
    assert costs(answers["app"]) == {
        "app-y": "0.008000000",
        "": "0.017000000",
        "app-x": "0.003000000",
    }
    assert costs(answers["member"]) == {
        world.member1_id: nanos_to_usd(MEMBER1_COST),
        world.member2_id: nanos_to_usd(MEMBER2_COST),
        world.owner_id: "0.007000000",
    }
    # Two Berlin days: day 1 holds K1's and half of K2's usage.
    series = {(p["bucket_start"], p["group_id"]): p for p in body["series"]}
    assert series[("2026-02-09T23:00:00Z", "gpt-4o-mini")]["cost_usd"] == "0.007000000"
    assert series[("2026-02-09T23:00:00Z", "gpt-4o-mini")]["requests"] == 7
    assert series[("2026-02-10T23:00:00Z", "gpt-4o-mini")]["cost_usd"] == "0.004000000"
    assert body["buckets"] == ["2026-02-09T23:00:00Z", "2026-02-10T23:00:00Z"]
    cards = body["cards"]
    assert cards["total_spend_usd"] == "0.028000000" and cards["models_in_use"] == 3
    assert cards["active_members"] == 3 and cards["avg_tokens_per_member"] == 1487  # 4460 / 3
    assert cards["avg_cost_per_call_usd"] == "0.002333333"  # 0.028 / 12


async def test_metric_chooses_the_order_of_the_groups(world: World) -> None:
    by = {}
    for metric in ("cost", "requests", "tokens"):
        body = ok(
            await world.owner.get(
                world.api("activity"), params={**WINDOW, "groupBy": "key", "metric": metric}
            )
        )
        by[metric] = [group["id"] for group in body["groups"]]
        assert body["metric"] == metric
    assert by["cost"] == [world.key1b, world.key2, world.key0, world.key1]
    assert by["requests"] == [world.key1, world.key2, world.key1b, world.key0]
    assert by["tokens"] == [world.key1b, world.key2, world.key1, world.key0]
    # `limit` names the largest groups and sums the rest as one.
    body = ok(
        await world.owner.get(
            world.api("activity"), params={**WINDOW, "groupBy": "key", "limit": 2}
        )
    )
    assert [g["id"] for g in body["groups"]] == [world.key1b, world.key2, "(other)"]
    assert body["groups"][2]["totals"]["cost_usd"] == "0.010000000"
    assert body["groups"][2]["label"] == "Other (2 more)"
    other = sum(
        int(p["cost_usd"].replace(".", "")) for p in body["series"] if p["group_id"] == "(other)"
    )
    assert other == 10_000_000


FILTERS = [
    ("group_id", "team_a", 13_000_000),
    ("group_id", "team_b", 8_000_000),
    ("user_id", "member2", 8_000_000),
    ("key_id", "key1b", 10_000_000),
    ("model", "gpt-4o-mini", 11_000_000),
    ("provider", "anthropic", 10_000_000),
    ("provider", "anthropic,openai", 21_000_000),
    ("app", "app-x", 3_000_000),
    ("deployment", "openai-us/gpt-4o-mini", 9_000_000),
    ("deployment", "openai-eu/gpt-4o-mini,anthropic/claude-sonnet", 12_000_000),
]


async def test_filters_narrow_the_usage(world: World) -> None:
    ids = {
        "team_a": world.team_a,
        "team_b": world.team_b,
        "member2": world.member2_id,
        "key1b": world.key1b,
    }
    for name, value, expected in FILTERS:
        query = {**WINDOW, name: ids.get(value, value), "groupBy": "model"}
        body = ok(await world.owner.get(world.api("activity"), params=query))
        assert body["totals"]["cost_usd"] == nanos_to_usd(expected), (name, value)
    both = {**WINDOW, "group_id": world.team_a, "model": "claude-sonnet"}
    body = ok(await world.owner.get(world.api("activity"), params=both))
    assert body["totals"]["cost_usd"] == "0.010000000"
    body = error(await world.owner.get(world.api("activity"), params={"group_id": "grp_x"}), 404)
    assert body["details"]["field"] == "group_id"


async def test_without_from_and_to_the_window_is_the_last_30_days_in_the_org_zone(
    world: World,
) -> None:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    recent = event(
        world.org_id, world.team_b, world.key2, world.member2_id, now - timedelta(hours=1), cost=42
    )
    old = event(
        world.org_id, world.team_b, world.key2, world.member2_id, now - timedelta(days=40), cost=1
    )
    await store(world.runtime, [recent, old])
    body = ok(await world.owner.get(world.api("activity")))
    assert body["totals"]["cost_usd"] == "0.000000042" and body["totals"]["requests"] == 1
    assert body["granularity"] == "day" and body["read_from"] == "daily_rollups"
    assert len(body["buckets"]) == 30 and body["groups"] == []
    assert [p["group_id"] for p in body["series"]] == [None]
    start = datetime.fromisoformat(body["from"])
    end = datetime.fromisoformat(body["to"])
    assert start <= now - timedelta(days=29) and end > now
    # Hourly over the same instants, or any other zone, read the 15-minute rollups.
    hourly = ok(
        await world.owner.get(
            world.api("activity"),
            params={"granularity": "hour", "from": body["from"], "to": body["to"]},
        )
    )
    assert hourly["read_from"] == "15_minute_rollups" and hourly["totals"] == body["totals"]
    assert len(hourly["buckets"]) in (30 * 24 - 1, 30 * 24, 30 * 24 + 1)


async def test_weeks_start_on_monday_and_instants_are_exclusive(world: World) -> None:
    # 2026-02-10 is a Tuesday: the first week bucket starts with the window, the second on
    # Monday 2026-02-16 (Berlin).
    weekly = ok(
        await world.owner.get(
            world.api("activity"),
            params={"from": "2026-02-10", "to": "2026-02-20", "granularity": "week"},
        )
    )
    assert weekly["buckets"] == ["2026-02-09T23:00:00Z", "2026-02-15T23:00:00Z"]
    assert weekly["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST)
    cut = DAY_1 + timedelta(hours=1)  # K1's first call and K2's first call stay out
    body = ok(
        await world.owner.get(
            world.api("activity"),
            params={"from": cut.isoformat(), "to": "2026-02-11", "timezone": "Asia/Kathmandu"},
        )
    )
    assert body["read_from"] == "15_minute_rollups"
    assert body["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST - 3_000_000)


BAD = [
    ({"groupBy": "planet"}, "groupBy"),
    ({"metric": "joy"}, "metric"),
    ({"granularity": "fortnight"}, "granularity"),
    ({"from": "2026-02-30"}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-02-10T10:00:00"}, "to"),
    ({"from": "2026-02-10T10:07:00Z"}, "from"),
    ({"from": "2026-02-12", "to": "2026-02-10"}, "from"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"from": "2024-01-01", "to": "2026-01-01", "granularity": "hour"}, "granularity"),
    ({"limit": 0}, "limit"),
    ({"from": "1850-01-01"}, "from"),
]


async def test_bad_values_are_422_naming_the_field(world: World) -> None:
    for params, field in BAD:
        body = error(await world.owner.get(world.api("activity"), params=params), 422)
        assert body["details"]["field"] == field, body
        assert body["message"].startswith(f"{field}: "), body
    # A year of hours is fine.
    year = {"from": "2025-02-11", "to": "2026-02-10", "granularity": "hour"}
    assert len(ok(await world.owner.get(world.api("activity"), params=year))["buckets"]) == 8760


async def test_the_two_ways_of_pivoting_give_the_same_answer(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to ONE_PASS_BUCKETS buckets the groups are ranked from the series read in one pass;
    above, the database ranks them and sums the rest. Both must agree to the nano-USD."""
    queries = [
        {**WINDOW, "groupBy": dimension, "metric": metric, "limit": limit, **extra}
        for dimension in ("model", "key", "member", "project", "provider", "app", "deployment")
        for metric, limit in (("cost", 2), ("requests", 20), ("tokens", 1))
        for extra in ({}, {"granularity": "hour"}, {"timezone": "Asia/Kolkata"})
    ]
    one_pass = [ok(await world.owner.get(world.api("activity"), params=q)) for q in queries]
    monkeypatch.setattr(service, "ONE_PASS_BUCKETS", 0)
    in_database = [ok(await world.owner.get(world.api("activity"), params=q)) for q in queries]
    for query, first, second in zip(queries, one_pass, in_database, strict=True):
        assert first == second, query
    assert any(g["id"] == "(other)" for body in one_pass for g in body["groups"])


async def test_members_and_models_are_counted_only_with_usage_inside_the_window(
    world: World,
) -> None:
    """An owner's unfiltered days are read from the org-wide daily rollups, whose counts of
    members and models probe each value for a row in the window: a member and a model with
    usage only the day before the window are not counted; a window holding that day counts
    them. A filter (the root group: every group, read from the daily rollups) agrees."""
    admin_key = (await make_key(world.org, world.team_a, by=world.admin_a, name="admin's")).id
    before = DAY_1 - timedelta(days=1)
    await store(
        world.runtime,
        [
            event(
                world.org_id,
                world.team_a,
                admin_key,
                world.admin_a_id,
                before,
                model="zz-only-before",
                cost=4_000_000,
            )
        ],
    )
    for window, members, models in (
        (WINDOW, 3, 3),
        ({"from": "2026-02-09", "to": "2026-02-11"}, 4, 4),
        ({"from": "2026-02-11", "to": "2026-02-11"}, 3, 3),  # day 2: the owner, members 1, 2
    ):
        lean = ok(await world.owner.get(world.api("activity"), params=window))
        full = ok(
            await world.owner.get(world.api("activity"), params={**window, "group_id": world.root})
        )
        assert lean["cards"] == full["cards"], window
        assert (lean["cards"]["active_members"], lean["cards"]["models_in_use"]) == (
            members,
            models,
        ), window
        listed = ok(await world.owner.get(world.api("members"), params=window))
        assert listed["cards"] == lean["cards"]
        assert len(listed["items"]) == members


async def test_the_activity_json_is_the_document_its_model_writes(world: World) -> None:
    """The route writes the series itself (activity_json), for speed: the same document, in the
    same order, as ActivityOut."""
    owner = Actor(world.owner_id, world.owner.person.email if world.owner.person else "")
    for granularity, group_by in (("day", "model"), ("hour", "key"), ("week", None)):
        async with world.runtime.sessions() as session:
            view = await service.activity(
                session,
                owner,
                world.org_id,
                service.WindowQuery("2026-02-10", "2026-02-11", "Asia/Kathmandu", granularity),
                service.Filters(),
                group_by=group_by,
                metric="cost",
                limit=2,
                now=world.runtime.clock.now(),
            )
        assert view.series
        written = json.loads(activity_json(view))
        documented = json.loads(ActivityOut.of(view).model_dump_json(by_alias=True))
        assert written == documented
        assert list(written) == list(documented)
        assert [list(point) for point in written["series"]] == [
            list(point) for point in documented["series"]
        ]
