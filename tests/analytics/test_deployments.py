"""Analytics by the provider and the deployment that served: `groupBy=deployment` with the
deployment ids as labels and '' for requests that reached none, in JSON, CSV and PDF; filters
`provider` and `deployment` taking one value, a comma list or repeated values, on activity, its
exports and the members view; bounded, with a 422 naming the field."""

from __future__ import annotations

import csv
import io
from typing import Any

from sluicegate.api.fields import LISTED_TEXT_LENGTH, MAX_LISTED_VALUES
from sluicegate.core.money import nanos_to_usd, usd_to_nanos
from tests.admin import error, ok
from tests.analytics.conftest import (
    CLAUDE,
    DEPLOYMENT_USAGE,
    EU,
    TOTAL_COST,
    TOTAL_REQUESTS,
    US,
    WINDOW,
    World,
)


async def activity(world: World, params: Any) -> dict[str, Any]:
    return ok(await world.owner.get(world.api("activity"), params=params))


async def test_activity_by_deployment_names_each_and_sums_exactly(world: World) -> None:
    body = await activity(world, {**WINDOW, "groupBy": "deployment"})
    assert body["groupBy"] == "deployment"
    groups = {g["id"]: g for g in body["groups"]}
    assert {name: g["label"] for name, g in groups.items()} == {
        EU: EU,
        US: US,
        CLAUDE: CLAUDE,
        "": "(no deployment)",
    }
    assert {
        name: (g["totals"]["cost_usd"], g["totals"]["requests"]) for name, g in groups.items()
    } == {
        name: (nanos_to_usd(cost), requests) for name, (cost, requests) in DEPLOYMENT_USAGE.items()
    }
    assert body["totals"]["cost_usd"] == nanos_to_usd(TOTAL_COST)
    assert sum(usd_to_nanos(p["cost_usd"]) for p in body["series"]) == TOTAL_COST
    # Errors are counted where they happened: K1's failed call on EU, the blocked one nowhere.
    assert (groups[EU]["totals"]["errors"], groups[""]["totals"]["blocked"]) == (1, 1)
    # The same answer from the 15-minute rollups (hours in another zone).
    hours = await activity(
        world,
        {**WINDOW, "groupBy": "deployment", "granularity": "hour", "timezone": "Asia/Kolkata"},
    )
    assert hours["read_from"] == "15_minute_rollups"
    assert sum(g["totals"]["requests"] for g in hours["groups"]) == TOTAL_REQUESTS


async def test_activity_exports_pivot_by_deployment(world: World) -> None:
    params = {**WINDOW, "groupBy": "deployment", "deployment": f"{US},{CLAUDE}"}
    body = await activity(world, params)
    response = await world.owner.get(world.api("activity.csv"), params=params)
    assert response.status_code == 200, response.text
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["bucket_start"], r["group_id"], r["group_label"], r["cost_usd"]) for r in rows] == [
        (p["bucket_start"], p["group_id"], p["group_id"], p["cost_usd"]) for p in body["series"]
    ]
    assert {r["group_id"] for r in rows} == {US, CLAUDE}
    assert sum(usd_to_nanos(r["cost_usd"]) for r in rows) == (
        DEPLOYMENT_USAGE[US][0] + DEPLOYMENT_USAGE[CLAUDE][0]
    )
    pdf = await world.owner.get(world.api("activity.pdf"), params=params)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")


def cost(body: dict[str, Any]) -> int:
    return usd_to_nanos(body["totals"]["cost_usd"])


async def test_provider_and_deployment_filters_take_one_value_a_list_or_repeats(
    world: World,
) -> None:
    us, eu, claude = (DEPLOYMENT_USAGE[name][0] for name in (US, EU, CLAUDE))
    cases: list[tuple[list[tuple[str, str]], int]] = [
        ([("deployment", US)], us),
        ([("deployment", f"{US},{EU}")], us + eu),
        ([("deployment", US), ("deployment", EU)], us + eu),
        ([("deployment", f"{US}, {EU}"), ("deployment", US)], us + eu),  # spaces, twice: once
        ([("deployment", "nowhere/none")], 0),
        ([("provider", "anthropic")], claude),
        ([("provider", "anthropic,openai")], TOTAL_COST - DEPLOYMENT_USAGE[""][0]),
        ([("provider", "openai"), ("deployment", CLAUDE)], 0),
        ([("provider", "openai"), ("deployment", f"{EU},{CLAUDE}")], eu),
    ]
    for filters, expected in cases:
        for group_by in ("model", "deployment", "provider"):
            params = [*WINDOW.items(), ("groupBy", group_by), *filters]
            body = await activity(world, params)
            assert cost(body) == expected, (filters, group_by)
            assert sum(usd_to_nanos(g["totals"]["cost_usd"]) for g in body["groups"]) == expected
            assert body["read_from"] == "daily_rollups"
    # Filtered members: K2 (member 2) is all US; member 1 has one US call.
    members = ok(await world.owner.get(world.api("members"), params={**WINDOW, "deployment": US}))
    assert {m["user_id"]: m["cost_usd"] for m in members["items"]} == {
        world.member2_id: "0.008000000",
        world.member1_id: "0.001000000",
    }


async def test_listed_filters_are_bounded_and_422_names_the_field(world: World) -> None:
    too_many = ",".join(f"dep-{n}" for n in range(MAX_LISTED_VALUES + 1))
    repeated = [("provider", f"p{n}") for n in range(MAX_LISTED_VALUES + 1)]
    for params, field in (
        ({"deployment": too_many}, "deployment"),
        (repeated, "provider"),
        ({"deployment": "x" * (LISTED_TEXT_LENGTH + 1)}, "deployment"),
        ({"provider": ""}, "provider"),
        ({"provider": " , "}, "provider"),
        ({"deployment": "a\x00b"}, "deployment"),
    ):
        for view in ("activity", "activity.csv", "members"):
            body = error(await world.owner.get(world.api(view), params=params), 422)
            assert body["details"]["field"].startswith(field), (params, view, body)
            assert body["message"].startswith(field), body
    at_most = ",".join(f"dep-{n}" for n in range(MAX_LISTED_VALUES))
    assert cost(await activity(world, {**WINDOW, "deployment": at_most})) == 0
