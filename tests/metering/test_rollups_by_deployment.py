"""The rollups key usage by the deployment that served (the usage event's routing): each rollup
table sums each deployment's usage exactly, a request that reached none counts under '', a
routing of another shape never fails the writer, the daily rollups rebuilt in another zone keep
the deployments, and reconciling against the usage rows finds nothing amiss."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from sluicegate.metering.event import (
    DEPLOYMENT_LENGTH,
    NO_ROUTING,
    Routing,
    deployment_of,
    routing_of,
)
from sluicegate.metering.models import UsageDailyRollup, UsageOrgDailyRollup, UsageRollup
from sluicegate.metering.reconcile import compare, expected_of, window_of
from sluicegate.metering.writer import store_usage
from sluicegate.orgs.service import update_organization
from sluicegate.runtime import Runtime
from tests.factories import make_tenant
from tests.metering.books import read_books
from tests.metering.test_drain import (
    append_all,
    drain_of,
    drain_until_empty,
    events,
    pg_runtime,
)

__all__ = ["pg_runtime"]  # the fixture, shared with test_drain.py

LONG = "x" * (DEPLOYMENT_LENGTH + 50)
ROUTINGS: list[dict[str, Any] | None] = [
    None,  # blocked before forwarding
    {"deployment": "openai-eu/gpt-4o-mini", "attempts": 1, "fallback": False},
    {"deployment": "openai-us/gpt-4o-mini", "attempts": 3, "fallback": True},
    {
        "deployment": "anthropic/claude-haiku",
        "attempts": 2,
        "fallback": True,
        "fallback_model": "claude-haiku",
    },
    {"deployment": LONG, "attempts": 1, "fallback": False},  # keyed by its first 200 characters
    {"attempts": 0},  # no deployment reached
    {"deployment": 7, "attempts": "two"},  # another shape: read as absent, never an error
]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=5,
)
_ROUTING = _JSON | st.dictionaries(
    st.sampled_from(["deployment", "attempts", "fallback", "fallback_model", "other"]),
    _JSON | st.text(max_size=300),
)


@given(_ROUTING)
def test_any_routing_reads_without_error_and_as_the_rollups_key_it(routing: Any) -> None:
    read = routing_of(routing)
    assert deployment_of(routing) == (read.deployment or "")
    assert read.deployment is None or 0 < len(read.deployment) <= DEPLOYMENT_LENGTH
    assert read.attempts is None or type(read.attempts) is int
    assert read.fallback is None or type(read.fallback) is bool
    assert read.fallback_model is None or isinstance(read.fallback_model, str)


@given(
    deployment=st.text(min_size=1, max_size=DEPLOYMENT_LENGTH),
    attempts=st.integers(1, 10),
    fallback=st.booleans(),
    fallback_model=st.none() | st.text(min_size=1, max_size=50),
)
def test_a_routing_as_the_proxy_writes_it_reads_back_whole(
    deployment: str, attempts: int, fallback: bool, fallback_model: str | None
) -> None:
    routing: dict[str, Any] = {"deployment": deployment, "attempts": attempts, "fallback": fallback}
    if fallback_model is not None:
        routing["fallback_model"] = fallback_model
    assert routing_of(routing) == Routing(deployment, attempts, fallback, fallback_model)
    assert routing_of(None) == NO_ROUTING and deployment_of(None) == ""


async def per_deployment(runtime: Runtime, org_id: str) -> dict[str, Counter[str]]:
    """Requests and cost per deployment in each rollup table."""
    sums: dict[str, Counter[str]] = {}
    async with runtime.sessions() as session:
        for name, key, table in (
            ("quarters", UsageRollup.deployment, UsageRollup),
            ("days", UsageDailyRollup.deployment, UsageDailyRollup),
            ("org_days", UsageOrgDailyRollup.value, UsageOrgDailyRollup),
        ):
            statement = select(key, func.sum(table.requests), func.sum(table.cost_nusd)).where(
                table.org_id == org_id
            )
            if table is UsageOrgDailyRollup:
                statement = statement.where(UsageOrgDailyRollup.dimension == "deployment")
            rows = (await session.execute(statement.group_by(key))).all()
            sums[f"{name} requests"] = Counter({value: int(n) for value, n, _ in rows})
            sums[f"{name} cost"] = Counter({value: int(cost) for value, _, cost in rows})
    return sums


async def assert_reconciled(runtime: Runtime, org_id: str) -> None:
    async with runtime.sessions() as session:
        window = await window_of(session, org_id, None)
        assert window is not None
        comparisons = await compare(session, window, await expected_of(session, window))
        books = await read_books(session, org_id)
    assert [c.mismatches for c in comparisons if not c.ok] == []
    books.assert_consistent()


async def test_each_rollup_sums_each_deployment_exactly(runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    batch = events(tenant, 42)
    for n, event in enumerate(batch):
        event["routing"] = ROUTINGS[n % len(ROUTINGS)]
    async with runtime.unit_of_work() as session:
        await store_usage(session, batch)
        await store_usage(session, batch[:10])  # delivered again: adds nothing
    requests: Counter[str] = Counter()
    cost: Counter[str] = Counter()
    for event in batch:
        key = event["routing"] and event["routing"].get("deployment")
        key = key[:DEPLOYMENT_LENGTH] if isinstance(key, str) else ""
        requests[key] += 1
        cost[key] += event["cost_nusd"]
    assert set(requests) == {
        "",
        "openai-eu/gpt-4o-mini",
        "openai-us/gpt-4o-mini",
        "anthropic/claude-haiku",
        LONG[:DEPLOYMENT_LENGTH],
    }
    expected = {}
    for table in ("quarters", "days", "org_days"):
        expected[f"{table} requests"] = requests
        expected[f"{table} cost"] = cost
    assert await per_deployment(runtime, tenant.org_id) == expected
    await assert_reconciled(runtime, tenant.org_id)

    # Days summed again in another zone (the org's timezone changed) keep every deployment.
    async with runtime.unit_of_work() as session:
        await update_organization(
            session, tenant.actor, tenant.org_id, {"timezone": "Asia/Kathmandu"}
        )
    assert await per_deployment(runtime, tenant.org_id) == expected
    await assert_reconciled(runtime, tenant.org_id)


async def test_routed_usage_queued_in_the_stream_drains_into_the_rollups_by_deployment(
    pg_runtime: Runtime,
) -> None:
    runtime = pg_runtime
    tenant = await make_tenant(runtime)
    batch = events(tenant, 14)
    for n, event in enumerate(batch):
        event["routing"] = ROUTINGS[n % len(ROUTINGS)]
    await append_all(runtime, tenant, batch)
    await drain_until_empty(drain_of(runtime))
    sums = await per_deployment(runtime, tenant.org_id)
    assert (
        sums["quarters requests"]
        == sums["org_days requests"]
        == Counter(
            {
                "": 6,
                "openai-eu/gpt-4o-mini": 2,
                "openai-us/gpt-4o-mini": 2,
                "anthropic/claude-haiku": 2,
                LONG[:DEPLOYMENT_LENGTH]: 2,
            }
        )
    )
    await assert_reconciled(runtime, tenant.org_id)
