"""Analytics are exact, in every timezone: for random usage stored by the usage writer around a
DST change, the totals of any window are the sums of its events (to the nano-USD and the token)
and of the ledger's usage debits, the series add up to the totals, each local day's bucket holds
exactly the events of that day (computed here with zoneinfo), each provider's and each
deployment's sums (pivoted or filtered) are exactly their events', and the daily rollups (and
the org-wide daily rollups) answer exactly what the 15-minute rollups answer."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from sluicegate.analytics import service
from sluicegate.analytics.service import Activity, Filters, WindowQuery
from sluicegate.core.money import usd_to_nanos
from sluicegate.metering.event import deployment_of
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.runtime import Runtime
from tests.admin import ok
from tests.analytics.conftest import event, store
from tests.analytics.tenant_rows import Tenant, make_tenant

# Each org lives in a DST zone and its usage surrounds one of that zone's DST changes.
SCENARIOS = [
    ("Europe/Berlin", date(2026, 3, 29)),  # 23 hours: 02:00 -> 03:00
    ("America/New_York", date(2026, 3, 8)),  # 23 hours
    ("America/New_York", date(2026, 11, 1)),  # 25 hours: 02:00 -> 01:00
    ("America/Santiago", date(2026, 9, 6)),  # 23 hours, without a midnight: 00:00 -> 01:00
]
# Query zones: quarter- and half-hour offsets, DST zones, UTC; "org" is the org's own zone.
QUERY_ZONES = ["Asia/Kathmandu", "Asia/Kolkata", "Europe/Berlin", "America/New_York", "UTC", "org"]
# The window is these local days around the DST day; usage lies a day beyond it on each side.
DAYS_BEFORE, DAYS_AFTER = 2, 1
SPREAD = timedelta(days=DAYS_BEFORE + DAYS_AFTER + 3)
MODELS = ["gpt-4o-mini", "claude-sonnet", "llama-3"]
# (status, error_type): what the proxy records for a success, a failure and guardrail blocks.
OUTCOMES = [
    (200, None),
    (200, None),
    (502, "upstream_error"),
    (500, "internal_error"),
    (402, "budget_exceeded"),
    (429, "rate_limited"),
]
BLOCKED = {"budget_exceeded", "rate_limited"}
HOUR = timedelta(hours=1)
PROVIDERS = [None, "openai", "anthropic", "azure"]
# Deployment ids up to the 200 characters the rollups keep (a longer one is keyed by those).
DEPLOYMENTS = ["openai-eu/gpt-4o-mini", "openai-us/gpt-4o-mini", "anthropic/claude", "d" * 210]
# What the proxy records of how a request was served: none (blocked before any deployment), a
# deployment with its attempts and fallback, or attempts that reached none.
ROUTINGS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "deployment": st.sampled_from(DEPLOYMENTS),
            "attempts": st.integers(1, 5),
            "fallback": st.booleans(),
        },
        optional={"fallback_model": st.sampled_from(MODELS)},
    ),
    st.fixed_dictionaries({"attempts": st.integers(0, 3)}),
)


@pytest.fixture
def backend() -> str:
    """Postgres only: the rollups' sums and bucket joins are the database's."""
    return "postgres"


@dataclass(frozen=True)
class Expected:
    cost: int = 0
    requests: int = 0
    errors: int = 0
    blocked: int = 0
    prompt: int = 0
    completion: int = 0
    cached: int = 0

    def plus(self, e: dict[str, Any]) -> Expected:
        error_type = e["error_type"]
        blocked = error_type in BLOCKED
        return Expected(
            self.cost + e["cost_nusd"],
            self.requests + 1,
            self.errors + (1 if e["status_code"] >= 400 and not blocked else 0),
            self.blocked + (1 if blocked else 0),
            self.prompt + e["prompt_tokens"],
            self.completion + e["completion_tokens"],
            self.cached + e["cached_tokens"],
        )


def total(events: list[dict[str, Any]]) -> Expected:
    result = Expected()
    for e in events:
        result = result.plus(e)
    return result


def as_expected(sums: service.Sums) -> Expected:
    return Expected(
        sums.cost_nusd,
        sums.requests,
        sums.errors,
        sums.blocked,
        sums.prompt_tokens,
        sums.completion_tokens,
        sums.cached_tokens,
    )


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of `day` in `tz`: its midnight, or where a DST change skips midnight
    (Santiago), the change itself (a time in the gap reads with the offset before it)."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def instant_near_boundaries(zone: str, dst_day: date) -> st.SearchStrategy[datetime]:
    """Instants on, just before and just after the local midnights of the org's zone and every
    query zone, or anywhere in the spread of days around the DST day."""
    first = datetime.combine(dst_day - timedelta(days=DAYS_BEFORE + 1), time.min, tzinfo=UTC)
    boundaries = [
        local_midnight(dst_day + timedelta(days=offset), ZoneInfo(name))
        for name in sorted({zone, *QUERY_ZONES} - {"org"})
        for offset in range(-DAYS_BEFORE - 1, DAYS_AFTER + 3)
    ]
    near = st.tuples(
        st.sampled_from(boundaries),
        st.sampled_from(
            [timedelta(microseconds=-1), timedelta(0), timedelta(microseconds=1), -HOUR, HOUR]
        ),
    ).map(lambda pair: pair[0] + pair[1])
    anywhere = st.integers(0, int(SPREAD / timedelta(microseconds=1))).map(
        lambda micros: first + timedelta(microseconds=micros)
    )
    return st.one_of(near, anywhere)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    zone, dst_day = draw(st.sampled_from(SCENARIOS))
    usage = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "at": instant_near_boundaries(zone, dst_day),
                    "source": st.integers(0, 2),
                    "model": st.sampled_from(MODELS),
                    "outcome": st.sampled_from(OUTCOMES),
                    "cost": st.one_of(st.just(0), st.integers(1, 10**10)),
                    "prompt": st.integers(0, 10**6),
                    "completion": st.integers(0, 10**5),
                    "cached": st.integers(0, 1000),
                    "provider": st.sampled_from(PROVIDERS),
                    "routing": ROUTINGS,
                }
            ),
            min_size=1,
            max_size=30,
        )
    )
    return {
        "zone": zone,
        "dst_day": dst_day,
        "usage": usage,
        "query_zone": draw(st.sampled_from(QUERY_ZONES)),
        "granularity": draw(st.sampled_from(["hour", "day"])),
        "group_by": draw(
            st.sampled_from([None, "model", "key", "member", "project", "provider", "deployment"])
        ),
        # The values a provider and a deployment filter name.
        "provider_filter": draw(st.lists(st.sampled_from(PROVIDERS[1:]), min_size=1, unique=True)),
        "deployment_filter": draw(
            st.lists(st.sampled_from([d[:200] for d in DEPLOYMENTS]), min_size=1, unique=True)
        ),
        "limit": draw(st.integers(1, 3)),
        "metric": draw(st.sampled_from(["cost", "requests", "tokens"])),
        # The org may move to another zone halfway (its daily rollups are summed again).
        "move_to": draw(st.sampled_from([None, None, "Asia/Kathmandu", "America/New_York"])),
        # A batch written again (a retried drain) stores and debits nothing twice.
        "retried": draw(st.integers(0, len(usage))),
    }


async def activity(
    runtime: Runtime,
    tenant: Tenant,
    when: WindowQuery,
    *,
    group_by: str | None = None,
    metric: str = "cost",
    limit: int = service.DEFAULT_GROUPS,
    prefer_daily: bool = True,
    prefer_org_wide: bool = True,
    filters: Filters = Filters(),
) -> Activity:
    async with runtime.sessions() as session:
        return await service.activity(
            session,
            tenant.owner,
            tenant.org_id,
            when,
            filters,
            group_by=group_by,
            metric=metric,
            limit=limit,
            now=runtime.clock.now(),
            prefer_daily=prefer_daily,
            prefer_org_wide=prefer_org_wide,
        )


def answer(view: Activity) -> tuple[Any, ...]:
    """What a caller reads of an activity (which rollups answered aside)."""
    return (
        view.view.window,
        view.view.cards,
        view.groups,
        [(p.bucket_start, p.group_id, p.sums) for p in view.series],
    )


async def usage_debits(runtime: Runtime, org_id: str) -> list[LedgerEntry]:
    async with runtime.sessions() as session:
        statement = select(LedgerEntry).where(
            LedgerEntry.org_id == org_id, LedgerEntry.kind == "usage"
        )
        return list(await session.scalars(statement))


async def assert_exact_by_routing(
    runtime: Runtime, tenant: Tenant, when: WindowQuery, inside: list[Any], case: dict[str, Any]
) -> None:
    """By deployment and by provider, from the daily and the 15-minute rollups: each value's
    sums are its events' exactly, and a filter naming some values sums exactly their events."""
    keys = {
        "deployment": lambda e: deployment_of(e["routing"]),
        "provider": lambda e: e["provider"] or "",
    }
    for dimension, key_of in keys.items():
        by_value: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for e in inside:
            by_value[key_of(e)].append(e)
        expected = {value: total(events) for value, events in by_value.items()}
        for prefer_daily in (True, False):
            view = await activity(
                runtime,
                tenant,
                when,
                group_by=dimension,
                limit=service.MAX_GROUPS,
                prefer_daily=prefer_daily,
            )
            assert {g.id: as_expected(g.sums) for g in view.groups} == expected, dimension
            chosen = tuple(case[f"{dimension}_filter"])
            only = await activity(
                runtime,
                tenant,
                when,
                prefer_daily=prefer_daily,
                filters=Filters(**{dimension: chosen}),
            )
            wanted = [e for e in inside if key_of(e) in chosen]
            assert as_expected(only.view.cards.sums) == total(wanted), (dimension, chosen)
            points = sum((p.sums for p in only.series), service.Sums())
            assert as_expected(points) == total(wanted)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenarios())
async def test_totals_series_and_days_are_the_events_exactly(
    runtime: Runtime, app_client: httpx.AsyncClient, case: dict[str, Any]
) -> None:
    tenant = await make_tenant(runtime, app_client, case["zone"])
    events = []
    for drawn in case["usage"]:
        status, error_type = drawn["outcome"]
        events.append(
            event(
                tenant.org_id,
                *tenant.sources[drawn["source"]],
                drawn["at"],
                model=drawn["model"],
                cost=drawn["cost"],
                prompt=drawn["prompt"],
                completion=drawn["completion"],
                cached=drawn["cached"],
                status=status,
                error_type=error_type,
                provider=drawn["provider"],
                routing=drawn["routing"],
            )
        )
    half = len(events) // 2
    await store(runtime, events[:half])
    if case["move_to"] is not None:
        path = f"/api/v1/orgs/{tenant.org_id}"
        ok(await tenant.api.patch(path, json={"timezone": case["move_to"]}))
        tenant.zone = case["move_to"]
    await store(runtime, events[half:])
    await store(runtime, events[: case["retried"]])

    zone_name = tenant.zone if case["query_zone"] == "org" else case["query_zone"]
    tz = ZoneInfo(zone_name)
    dst_day = case["dst_day"]
    days = [dst_day + timedelta(days=offset) for offset in range(-DAYS_BEFORE, DAYS_AFTER + 1)]
    when = WindowQuery(days[0].isoformat(), days[-1].isoformat(), zone_name, case["granularity"])
    pivot = {"group_by": case["group_by"], "metric": case["metric"], "limit": case["limit"]}
    view = await activity(runtime, tenant, when, **pivot)

    # The window: the local days of the query zone, whatever the org's zone.
    midnights = [local_midnight(day, tz) for day in [*days, days[-1] + timedelta(days=1)]]
    assert (view.view.window.start, view.view.window.end) == (midnights[0], midnights[-1])
    if case["granularity"] == "day":
        assert list(view.view.window.starts) == midnights[:-1]
    else:
        hours = sum(int((b - a) / HOUR) for a, b in pairwise(midnights))
        assert len(view.view.window.starts) == hours
        assert all(start.astimezone(tz).minute == 0 for start in view.view.window.starts)
    assert view.view.daily == (zone_name == tenant.zone and case["granularity"] == "day")

    # Totals: exactly the events of those local days.
    by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_day[e["created_at"].astimezone(tz).date()].append(e)
    inside = [e for day in days for e in by_day[day]]
    assert as_expected(view.view.cards.sums) == total(inside)
    assert view.view.cards.members == len({e["user_id"] for e in inside})
    assert view.view.cards.models == len({e["requested_model"] for e in inside})

    # The series and the groups add up to the totals; each local day's buckets to its events.
    assert as_expected(sum((p.sums for p in view.series), service.Sums())) == total(inside)
    if case["group_by"] is not None:
        assert as_expected(sum((g.sums for g in view.groups), service.Sums())) == total(inside)
        assert len(view.groups) <= case["limit"] + 1
        ranked = [g.sums.metric(case["metric"]) for g in view.groups if g.id != service.OTHER]
        assert ranked == sorted(ranked, reverse=True)
    per_day: dict[date, service.Sums] = defaultdict(service.Sums)
    for point in view.series:
        per_day[point.bucket_start.astimezone(tz).date()] += point.sums
    for day in days:
        assert as_expected(per_day[day]) == total(by_day[day]), day
    assert set(per_day) <= set(days)
    if case["granularity"] == "hour":
        # Each hourly bucket: the events whose local clock shows that hour (a repeated hour of
        # a DST change is two buckets, told apart by fold).
        by_hour: dict[datetime, list[dict[str, Any]]] = defaultdict(list)
        for e in inside:
            local = e["created_at"].astimezone(tz)
            by_hour[local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)].append(e)
        per_hour: dict[datetime, service.Sums] = defaultdict(service.Sums)
        for point in view.series:
            per_hour[point.bucket_start] += point.sums
        assert {h: as_expected(sums) for h, sums in per_hour.items()} == {
            h: total(hour) for h, hour in by_hour.items()
        }

    # The HTTP API states the same numbers.
    params: dict[str, Any] = {
        "from": when.since,
        "to": when.until,
        "timezone": zone_name,
        "granularity": case["granularity"],
        "metric": case["metric"],
        "limit": case["limit"],
    }
    if case["group_by"] is not None:
        params["groupBy"] = case["group_by"]
    body = ok(
        await tenant.api.get(f"/api/v1/orgs/{tenant.org_id}/analytics/activity", params=params)
    )
    expected = total(inside)
    assert usd_to_nanos(body["totals"]["cost_usd"]) == expected.cost
    assert (body["totals"]["requests"], body["totals"]["tokens"]) == (
        expected.requests,
        expected.prompt + expected.completion,
    )
    assert sum(usd_to_nanos(p["cost_usd"]) for p in body["series"]) == expected.cost

    # The daily rollups and the 15-minute rollups give the same answer.
    fine = await activity(runtime, tenant, when, **pivot, prefer_daily=False)
    assert not fine.view.daily
    assert answer(fine) == answer(view)
    org_days = WindowQuery(days[0].isoformat(), days[-1].isoformat(), tenant.zone, "day")
    daily = await activity(runtime, tenant, org_days, group_by="model")
    quarters = await activity(runtime, tenant, org_days, group_by="model", prefer_daily=False)
    assert daily.view.daily and not quarters.view.daily
    assert answer(daily) == answer(quarters)
    # ... and the org-wide daily rollups (what an owner's unfiltered days read) the same as the
    # daily rollups of every dimension.
    for dimension in (None, *service.DIMENSIONS):
        lean = await activity(runtime, tenant, org_days, group_by=dimension, limit=2)
        full = await activity(
            runtime, tenant, org_days, group_by=dimension, limit=2, prefer_org_wide=False
        )
        assert answer(lean) == answer(full), dimension

    await assert_exact_by_routing(runtime, tenant, when, inside, case)

    # Everything stored is in the ledger's hourly usage debits, and in a window holding it all.
    debits = await usage_debits(runtime, tenant.org_id)
    everything = WindowQuery(
        (dst_day - timedelta(days=7)).isoformat(),
        (dst_day + timedelta(days=7)).isoformat(),
        zone_name,
        "hour",
    )
    whole = await activity(runtime, tenant, everything)
    assert as_expected(whole.view.cards.sums) == total(events)
    assert -sum(d.amount_nusd for d in debits) == total(events).cost
    assert sum(d.requests or 0 for d in debits) == sum(1 for e in events if e["cost_nusd"])
    # Where local hours are UTC hours, each hourly bucket is its hour's debit.
    if zone_name in ("UTC", "Europe/Berlin", "America/New_York"):
        hourly = {p.bucket_start: p.sums.cost_nusd for p in whole.series if p.sums.cost_nusd}
        assert hourly == {d.period_start: -d.amount_nusd for d in debits}
