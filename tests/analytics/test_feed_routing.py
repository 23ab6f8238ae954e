"""The activity feed says how each request was served: provider, deployment, upstream attempts,
whether a fallback served it and which fallback model (null where the usage event does not say,
as for a request blocked before any deployment), in JSON and CSV alike; and it filters by
provider and deployment, one value, a comma list or repeated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.admin import error, ok
from tests.analytics.test_feed import (
    START,
    World,
    activity,
    as_csv,
    csv_rows,
    newest_first,
    usage,
    world,
)

__all__ = ["world"]  # the fixture, shared with test_feed.py

EU, CLAUDE = "openai-eu/gpt-4o-mini", "anthropic/claude-haiku"


def routed_events(world: World) -> list[dict[str, Any]]:
    """Served first try; served by a fallback model after three attempts; blocked before any
    deployment; retried without reaching one; a routing of another shape; a deployment id
    starting like a formula."""
    keys = (world.km, world.kn, world.ka)
    cases: list[tuple[str | None, dict[str, Any] | None, dict[str, Any]]] = [
        ("openai", {"deployment": EU, "attempts": 1, "fallback": False}, {}),
        (
            "anthropic",
            {"deployment": CLAUDE, "attempts": 3, "fallback": True, "fallback_model": "haiku"},
            {},
        ),
        (None, None, {"status": 402, "error_type": "budget_exceeded"}),
        ("openai", {"attempts": 2}, {"status": 502, "error_type": "upstream_error"}),
        ("openai", {"deployment": 5, "attempts": "two", "fallback": "yes"}, {}),
        ("azure", {"deployment": "=cmd|x", "attempts": 1, "fallback": False}, {}),
    ]
    events = []
    for n, (provider, routing, outcome) in enumerate(cases):
        event = usage(world.org_id, keys[n % 3], START + timedelta(minutes=n), **outcome)
        events.append({**event, "provider": provider, "routing": routing})
    return events


async def test_each_request_shows_provider_deployment_attempts_and_fallback(world: World) -> None:
    events = routed_events(world)
    await world.store(events)
    items = {item["request_id"]: item for item in await activity(world.owner, world)}
    shown = [
        tuple(items[e["request_id"]][name] for name in ("provider", "deployment", "attempts"))
        + tuple(items[e["request_id"]][name] for name in ("fallback", "fallback_model"))
        for e in events
    ]
    assert shown == [
        ("openai", EU, 1, False, None),
        ("anthropic", CLAUDE, 3, True, "haiku"),
        (None, None, None, None, None),
        ("openai", None, 2, None, None),
        ("openai", None, None, None, None),
        ("azure", "=cmd|x", 1, False, None),
    ]
    response = await world.owner.get(f"{world.base}/activity.csv")
    assert response.status_code == 200, response.text
    rows = csv_rows(response.text)
    assert rows == [as_csv(item) for item in await activity(world.owner, world)]
    by_id = {row["request_id"]: row for row in rows}
    second, formula = by_id[events[1]["request_id"]], by_id[events[5]["request_id"]]
    assert (second["deployment"], second["attempts"], second["fallback"]) == (CLAUDE, "3", "true")
    assert second["fallback_model"] == "haiku"
    assert formula["deployment"] == "'=cmd|x"
    blocked = by_id[events[2]["request_id"]]
    assert [blocked[name] for name in ("deployment", "attempts", "fallback")] == ["", "", ""]


async def test_the_feed_filters_by_provider_and_deployment(world: World) -> None:
    events = routed_events(world)
    await world.store(events)

    def deployment(e: dict[str, Any]) -> Any:
        return (e["routing"] or {}).get("deployment")

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"provider": "openai"}, lambda e: e["provider"] == "openai"),
        ({"provider": "openai,azure"}, lambda e: e["provider"] in {"openai", "azure"}),
        ({"provider": ["anthropic", "azure"]}, lambda e: e["provider"] != "openai"),
        ({"deployment": EU}, lambda e: deployment(e) == EU),
        ({"deployment": f"{EU}, {CLAUDE}"}, lambda e: deployment(e) in {EU, CLAUDE}),
        ({"deployment": CLAUDE, "provider": "openai"}, lambda e: False),
    ]
    for params, wanted in cases:
        expected = newest_first([e for e in events if e["provider"] and wanted(e)])
        got = [item["request_id"] for item in await activity(world.owner, world, **params)]
        assert got == expected, params
        response = await world.owner.get(f"{world.base}/activity.csv", params=params)
        assert [row["request_id"] for row in csv_rows(response.text)] == expected, params
    too_many = ",".join(f"dep-{n}" for n in range(11))
    for params in ({"deployment": too_many}, {"provider": ","}):
        problem = error(await world.owner.get(f"{world.base}/activity", params=params), 422)
        assert problem["details"]["field"] in params, problem
    assert ok(await world.owner.get(f"{world.base}/activity", params={"deployment": "x"}))
