"""Insights over the admin API: a spike planted after 14 normal days is the one anomaly (per
member, key and model, in the org's own days), the summary states the exact totals and the top
mover, and each caller reads insights about the usage they see."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import error, ok
from tests.analytics.test_feed import World, make_world, usage

ZONE = "Asia/Kathmandu"  # +05:45: the org's days are not UTC days
DAY0 = date(2026, 3, 1)
SPIKE_DAY = DAY0 + timedelta(days=14)  # 2026-03-15, after 14 normal days
USD = 10**9
# Mia's daily spend cycles through these (every value recurs within any 14-day window).
CYCLE = [5_000_000_000, 5_500_000_000, 4_500_000_000, 6_000_000_000, 5_200_000_000]
CYCLE += [4_800_000_000, 5_600_000_000]
SPIKE = 42_100_000_000
FLAT = 3 * USD  # Ned's spend, every day the same


def local(day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)


def history(world: World) -> list[dict[str, Any]]:
    """Mia (team, key KM, gpt-4o) at 00:10 local time, the previous UTC day; Ned (other, key KN,
    claude-3-5-haiku) flat at noon; Mia's spend on SPIKE_DAY is SPIKE, in two requests."""
    events = []
    for i in range(15):
        day = DAY0 + timedelta(days=i)
        mia = SPIKE if day == SPIKE_DAY else CYCLE[i % 7]
        for part in (mia // 2, mia - mia // 2):
            events.append(
                usage(world.org_id, world.km, local(day, time(0, 10)), model="gpt-4o", cost=part)
            )
        events.append(
            usage(
                world.org_id,
                world.kn,
                local(day, time(12)),
                model="claude-3-5-haiku",
                cost=FLAT,
            )
        )
    return events


@pytest.fixture
async def world(runtime: Runtime, app_client: httpx.AsyncClient) -> World:
    built = await make_world(runtime, app_client, ZONE)
    await built.store(history(built))
    return built


async def anomalies(api: Any, world: World, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(await api.get(f"{world.base}/insights/anomalies", params=params))
    return body


async def test_a_spike_after_fourteen_normal_days_is_the_one_anomaly(world: World) -> None:
    window = {"from": str(SPIKE_DAY - timedelta(days=6)), "to": str(SPIKE_DAY)}
    report = await anomalies(world.owner, world, **window)
    assert (report["from"], report["to"], report["timezone"]) == (*window.values(), ZONE)
    reason = (
        "Spend of 42.10 USD on 2026-03-15 is 8.1x the 14-day median of 5.20 USD (robust z 62.2)"
    )
    found = {(a["dimension"], a["id"]): a for a in report["anomalies"]}
    assert set(found) == {
        ("member", world.km.user_id),
        ("key", world.km.id),
        ("model", "gpt-4o"),
    }
    for anomaly in found.values():
        assert anomaly["day"] == "2026-03-15" and anomaly["direction"] == "spike"
        assert anomaly["spend_usd"] == "42.100000000"
        assert anomaly["baseline_median_usd"] == "5.200000000"
        assert anomaly["baseline_days"] == 14 and anomaly["z_score"] == 62.22
        assert anomaly["reason"] == reason
    assert found[("member", world.km.user_id)]["label"] == "Mia"
    assert found[("key", world.km.id)]["label"].startswith("=mia's key (sk-")
    # Mia's own view holds the same anomalies; Ned's flat spend has none.
    assert len((await anomalies(world.member, world, **window))["anomalies"]) == 3
    assert (await anomalies(world.member2, world, **window))["anomalies"] == []
    # Before the spike nothing is odd.
    quiet = {"from": str(DAY0), "to": str(SPIKE_DAY - timedelta(days=1))}
    assert (await anomalies(world.owner, world, **quiet))["anomalies"] == []


async def test_the_summary_states_the_exact_totals_and_the_top_mover(world: World) -> None:
    period = {"from": "2026-03-09", "to": "2026-03-15"}
    summary = ok(await world.owner.get(f"{world.base}/insights/summary", params=period))
    assert {k: summary[k] for k in ("from", "to", "previous_from", "previous_to")} == {
        "from": "2026-03-09",
        "to": "2026-03-15",
        "previous_from": "2026-03-02",
        "previous_to": "2026-03-08",
    }
    assert (summary["total_usd"], summary["previous_total_usd"]) == ("94.700000000", "57.600000000")
    assert summary["change_pct"] == "64.4"
    movers = {(m["dimension"], m["id"]): m for m in summary["movers"]}
    assert set(movers) == {("member", world.km.user_id), ("model", "gpt-4o"), ("key", world.km.id)}
    assert movers[("member", world.km.user_id)] == {
        "dimension": "member",
        "id": world.km.user_id,
        "label": "Mia",
        "current_usd": "73.700000000",
        "previous_usd": "36.600000000",
        "change_usd": "37.100000000",
        "change_pct": "101.4",
    }
    key_label = movers[("key", world.km.id)]["label"]
    assert key_label.startswith("=mia's key (sk-")
    rise = "rose the most: 73.70 USD, up 37.10 USD from 36.60 USD."
    assert summary["sentences"] == [
        "Spend was 94.70 USD from 2026-03-09 to 2026-03-15, up 64.4% from 57.60 USD in the "
        "previous 7 days (2026-03-02 to 2026-03-08).",
        f"Among members, Mia {rise}",
        f"Among keys, {key_label} {rise}",
        f"Among models, gpt-4o {rise}",
        "gpt-4o was the top model with 77.8% of spend (73.70 USD).",
    ]
    # A viewer of team reads Mia's spend only; Ned his own.
    viewer = ok(await world.viewer.get(f"{world.base}/insights/summary", params=period))
    assert (viewer["total_usd"], viewer["previous_total_usd"]) == ("73.700000000", "36.600000000")
    ned = ok(await world.member2.get(f"{world.base}/insights/summary", params=period))
    assert (ned["total_usd"], ned["change_pct"], ned["movers"]) == ("21.000000000", "0.0", [])
    assert ned["sentences"][-1] == (
        "claude-3-5-haiku was the top model with 100.0% of spend (21.00 USD)."
    )


async def test_periods_default_to_the_last_seven_days_and_bad_ones_are_422(
    world: World,
) -> None:
    today = datetime.now(ZoneInfo(ZONE)).date()
    for path in ("anomalies", "summary"):
        body = ok(await world.admin.get(f"{world.base}/insights/{path}"))
        assert (body["from"], body["to"]) == (str(today - timedelta(days=6)), str(today))
        for params in (
            {"from": "2026-03-10", "to": "2026-03-09"},
            {"from": "2026-02-30"},
            {"from": "2026-03-01T00:00:00Z"},
            {"from": "2024-01-01", "to": "2026-01-01"},
            {"from": "0001-01-02", "to": "0001-01-03"},
        ):
            problem = error(
                await world.admin.get(f"{world.base}/insights/{path}", params=params), 422
            )
            assert problem["message"], params
    summary = ok(await world.admin.get(f"{world.base}/insights/summary"))
    assert summary["previous_to"] == str(today - timedelta(days=7))
