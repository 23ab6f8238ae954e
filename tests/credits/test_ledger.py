"""The ledger: running balances on every page equal the prefix sums in (created_at, id) order,
whatever the page size and filters; the CSV export is the same list oldest first; top-ups reach
an existing credit counter exactly once (and never when rolled back); the usage writer debits
one row per org and UTC hour in the same transaction as the usage rows, once per request even
when a batch is retried; and after real traffic through the proxy the balance is exactly the
top-ups minus the usage cost, in the ledger and in the counter store alike."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from sluicegate.core.actors import Actor
from sluicegate.core.ids import new_id
from sluicegate.core.money import nanos_to_usd, usd_to_nanos
from sluicegate.credits import service
from sluicegate.guard.counters import CreditSeed
from sluicegate.guard.enforcer import seed_of
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.metering.models import UsageEvent
from sluicegate.metering.writer import UsageWriter
from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, ok
from tests.credits.test_credits_api import balance, top_up
from tests.factories import Org, make_org
from tests.proxy.conftest import usage_events

HOUR = timedelta(hours=1)


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=2)


def usage_event(org_id: str, at: datetime, cost: int, request_id: str | None = None) -> dict:
    return {
        "request_id": request_id or new_id("req"),
        "created_at": at,
        "org_id": org_id,
        "group_id": "grp_x",
        "key_id": "key_x",
        "user_id": "usr_x",
        "requested_model": "gpt-4o-mini",
        "served_model": "gpt-4o-mini",
        "provider": "mock",
        "app": None,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost_nusd": cost,
        "latency_ms": 3,
        "ttft_ms": None,
        "status_code": 200,
        "error_type": None,
        "stream": False,
        "usage_estimated": False,
        "routing": None,
    }


async def write_usage(runtime: Runtime, events: list[dict]) -> None:
    writer = UsageWriter(runtime.sessions)
    for event in events:
        writer.record(event)
    assert await writer.flush()


async def ledger_rows(runtime: Runtime, org_id: str, kind: str | None = None) -> list[LedgerEntry]:
    async with runtime.sessions() as session:
        statement = select(LedgerEntry).where(LedgerEntry.org_id == org_id)
        if kind is not None:
            statement = statement.where(LedgerEntry.kind == kind)
        return list(
            await session.scalars(statement.order_by(LedgerEntry.created_at, LedgerEntry.id))
        )


async def usage_cost(runtime: Runtime, org_id: str) -> int:
    async with runtime.sessions() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(UsageEvent.cost_nusd), 0)).where(
                UsageEvent.org_id == org_id
            )
        )
    return int(total or 0)


async def expected_balances(runtime: Runtime, org_id: str) -> dict[str, int]:
    """The oracle: every entry's prefix sum in (created_at, id) order, from the table itself."""
    running, balances = 0, {}
    for entry in await ledger_rows(runtime, org_id):
        running += entry.amount_nusd
        balances[entry.id] = running
    return balances


def csv_rows(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    return list(csv.DictReader(io.StringIO(response.text)))


def as_csv(item: dict[str, Any]) -> dict[str, str]:
    """A JSON ledger line as the CSV states it (a note that a spreadsheet would run as a formula
    is prefixed with an apostrophe)."""
    note = item["note"] or ""
    if note.startswith(("=", "+", "-", "@")):
        note = "'" + note
    return {
        "id": item["id"],
        "created_at": item["created_at"],
        "kind": item["kind"],
        "amount_usd": item["amount_usd"],
        "balance_usd": item["balance_usd"],
        "requests": "" if item["requests"] is None else str(item["requests"]),
        "note": note,
        "actor_user_id": item["actor_user_id"] or "",
    }


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- running balances -----------------------------------------------------------------------------

amounts = st.integers(1, 10**13)  # up to 10,000 USD in nano-USD
operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), amounts, st.just(0)),
        st.tuples(st.just("adjustment"), st.integers(-(10**13), 10**13).filter(bool), st.just(0)),
        st.tuples(st.just("refund"), amounts, st.just(0)),
        # usage: cost (0 is not billed) and how many hours ago
        st.tuples(st.just("usage"), st.integers(0, 10**10), st.integers(0, 4)),
    ),
    min_size=1,
    max_size=24,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=operations,
    page=st.integers(1, 6),
    kind=st.sampled_from([None, None, "topup", "usage", "adjustment", "refund"]),
)
async def test_every_page_states_the_prefix_sums(
    runtime: Runtime, app_client: httpx.AsyncClient, ops: list, page: int, kind: str | None
) -> None:
    org = await make_org(runtime, app_client, levels=2)
    now = datetime.now(UTC)
    usage: list[dict] = []
    total = 0
    for op, amount, hours_ago in ops:
        if op == "topup":
            ok(await top_up(org.owner, org, nanos_to_usd(amount), f"top-up {amount}"), 201)
        elif op == "usage":
            usage.append(usage_event(org.id, now - hours_ago * HOUR, amount))
            amount = -amount
        else:
            ok(
                await org.owner.post(
                    f"{org.credits}/adjustments",
                    json={"amount_usd": nanos_to_usd(amount), "kind": op, "note": "=SUM(A1)"},
                ),
                201,
            )
        total += amount
    await write_usage(runtime, usage)

    oracle = await expected_balances(runtime, org.id)
    params: dict[str, Any] = {"limit": page}
    if kind is not None:
        params["kind"] = kind
    items = await all_pages(org.owner, f"{org.credits}/ledger", params)
    wanted = [e for e in reversed(await ledger_rows(runtime, org.id, kind))]
    assert [item["id"] for item in items] == [entry.id for entry in wanted]
    for item, entry in zip(items, wanted, strict=True):
        assert usd_to_nanos(item["balance_usd"]) == oracle[item["id"]]
        assert usd_to_nanos(item["amount_usd"]) == entry.amount_nusd
        assert item["kind"] == entry.kind
    # Newest first: every line is the one below it plus what lies between them.
    assert [moment(i["created_at"]) for i in items] == sorted(
        (moment(i["created_at"]) for i in items), reverse=True
    )
    everything = ok(await org.owner.get(f"{org.credits}/ledger", params={"limit": 1}))
    credits = await balance(org.owner, org)
    assert credits["balance_usd"] == credits["ledger_balance_usd"] == nanos_to_usd(total)
    if everything["items"]:
        assert everything["items"][0]["balance_usd"] == nanos_to_usd(total)

    exported = csv_rows(await org.owner.get(f"{org.credits}/ledger.csv", params=params))
    assert exported == [as_csv(item) for item in reversed(items)]


async def test_since_and_until_bound_the_list_and_balances_count_what_lies_before(
    org: Org, runtime: Runtime
) -> None:
    now = datetime.now(UTC).replace(minute=30)
    await write_usage(
        runtime,
        [usage_event(org.id, now - 3 * HOUR, 1_000), usage_event(org.id, now - 2 * HOUR, 2_000)],
    )
    ok(await top_up(org.owner, org, "1"), 201)
    hour_before = (now - 2 * HOUR).replace(minute=0, second=0, microsecond=0)
    params = {"since": hour_before.isoformat(), "until": (now + HOUR).isoformat()}
    items = ok(await org.owner.get(f"{org.credits}/ledger", params=params))["items"]
    assert [(i["kind"], i["amount_usd"], i["balance_usd"]) for i in items] == [
        ("topup", "1.000000000", "0.999997000"),
        ("usage", "-0.000002000", "-0.000003000"),
    ]
    assert items[1]["period_start"] == items[1]["created_at"]
    assert moment(items[1]["period_start"]) == hour_before and items[1]["requests"] == 1
    assert items[1]["actor_user_id"] is None
    only_before = ok(
        await org.owner.get(f"{org.credits}/ledger", params={"until": hour_before.isoformat()})
    )["items"]
    assert [i["balance_usd"] for i in only_before] == ["-0.000001000"]
    exported = csv_rows(await org.owner.get(f"{org.credits}/ledger.csv", params=params))
    assert [row["balance_usd"] for row in exported] == ["-0.000003000", "0.999997000"]


async def test_list_parameters_are_validated(org: Org) -> None:
    url = f"{org.credits}/ledger"
    for params, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"kind": "gift"}, "kind"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),  # no offset
    ):
        assert error(await org.owner.get(url, params=params), 422)["details"]["field"] == field
    error(await org.owner.get(f"{url}.csv", params={"kind": "gift"}), 422)


async def test_a_long_ledger_pages_and_exports_in_order(org: Org, runtime: Runtime) -> None:
    """More entries than one export page (500), so the CSV streams several."""
    now = datetime.now(UTC)
    events = [usage_event(org.id, now - i * HOUR, 1_000 + i) for i in range(620)]
    await write_usage(runtime, events)
    ok(await top_up(org.owner, org, "100"), 201)
    oracle = await expected_balances(runtime, org.id)
    assert len(oracle) == 621
    items = await all_pages(org.owner, f"{org.credits}/ledger", {"limit": 200})
    assert len(items) == 621 and len({i["id"] for i in items}) == 621
    assert all(usd_to_nanos(i["balance_usd"]) == oracle[i["id"]] for i in items)
    exported = csv_rows(await org.owner.get(f"{org.credits}/ledger.csv"))
    assert exported == [as_csv(item) for item in reversed(items)]
    last = 100 * 10**9 - sum(e["cost_nusd"] for e in events)
    assert exported[-1]["balance_usd"] == nanos_to_usd(last)


async def test_a_formula_in_a_note_is_exported_as_text(org: Org) -> None:
    ok(await top_up(org.owner, org, "1", '=HYPERLINK("http://x")'), 201)
    ok(await top_up(org.owner, org, "1", 'plain, with "quotes"'), 201)
    rows = csv_rows(await org.owner.get(f"{org.credits}/ledger.csv"))
    assert [row["note"] for row in rows] == ['\'=HYPERLINK("http://x")', 'plain, with "quotes"']
    assert list(rows[0]) == [
        "id",
        "created_at",
        "kind",
        "amount_usd",
        "balance_usd",
        "requests",
        "note",
        "actor_user_id",
    ]


# --- the credit counter ---------------------------------------------------------------------------


async def test_a_top_up_reaches_an_existing_counter_exactly_once(
    org: Org, runtime: Runtime
) -> None:
    ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
    ok(await top_up(org.owner, org, "3"), 201)
    assert (await balance(org.owner, org))["balance_usd"] == "3.000000000"  # seeded: exists now
    ok(await top_up(org.owner, org, "2"), 201)
    assert (await balance(org.owner, org))["balance_usd"] == "5.000000000"
    counter = service.credit_counter(org.id)
    async with runtime.sessions() as session:
        seed = await seed_of(session, counter)
    assert seed == CreditSeed(5 * 10**9, 5 * 10**9, 2)
    # The same sync again (a retry, another worker) and an older view arriving late: no change.
    await runtime.counters.sync_credit(counter, seed)
    await runtime.counters.sync_credit(counter, seed)
    await runtime.counters.sync_credit(counter, CreditSeed(3 * 10**9, 3 * 10**9, 1))
    assert (await balance(org.owner, org))["balance_usd"] == "5.000000000"
    # A top-up rolled back never reaches the counter.
    owner = Actor(user_id=org.owner.person.user_id, email=org.owner.person.email)
    with pytest.raises(RuntimeError):
        async with runtime.unit_of_work() as session:
            await service.top_up(
                session,
                owner,
                org.id,
                runtime.counters,
                amount_nusd=10**9,
                note=None,
                now=datetime.now(UTC),
            )
            raise RuntimeError("rolled back")
    assert await balance(org.owner, org) == {
        "balance_usd": "5.000000000",
        "reserved_usd": "0.000000000",
        "available_usd": "5.000000000",
        "enforced": True,
        "ledger_balance_usd": "5.000000000",
    }


async def test_the_counter_is_rebuilt_from_the_ledger_when_missing(
    org: Org, runtime: Runtime
) -> None:
    ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
    await write_usage(runtime, [usage_event(org.id, datetime.now(UTC), 250)])
    ok(await top_up(org.owner, org, "1"), 201)
    await runtime.counters.forget([service.credit_counter(org.id).key])
    assert (await balance(org.owner, org))["balance_usd"] == "0.999999750"


# --- usage debits ---------------------------------------------------------------------------------


async def test_usage_debits_are_hourly_and_a_retried_batch_debits_once(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    first = await make_org(runtime, app_client, levels=2)
    second = await make_org(runtime, app_client, levels=2)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 5 * HOUR
    batch = [
        usage_event(first.id, hour + timedelta(minutes=1), 100),
        usage_event(first.id, hour + timedelta(minutes=59, seconds=59.999999), 200),
        usage_event(first.id, hour + timedelta(minutes=30), 0),  # free: not a billed request
        usage_event(first.id, hour + HOUR, 400),
        usage_event(second.id, hour + timedelta(minutes=5), 800),
    ]
    await write_usage(runtime, batch)
    retry = [*batch, usage_event(first.id, hour + timedelta(minutes=2), 1_600)]
    await write_usage(runtime, retry)  # the batch again (a retry), with one new event
    await write_usage(runtime, retry)

    rows = await ledger_rows(runtime, first.id)
    assert [(r.kind, r.period_start, r.created_at, r.amount_nusd, r.requests) for r in rows] == [
        ("usage", hour, hour, -1_900, 3),
        ("usage", hour + HOUR, hour + HOUR, -400, 1),
    ]
    assert all(r.actor_user_id is None and r.id.startswith("led_") for r in rows)
    assert [(r.amount_nusd, r.requests) for r in await ledger_rows(runtime, second.id)] == [
        (-800, 1)
    ]
    for org in (first, second):
        debits = sum(r.amount_nusd for r in await ledger_rows(runtime, org.id, "usage"))
        assert -debits == await usage_cost(runtime, org.id)


async def test_concurrent_writers_with_overlapping_batches_debit_each_request_once(
    org: Org, runtime: Runtime
) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    events = [
        usage_event(org.id, hour - (i % 3) * HOUR + timedelta(seconds=i), 1_000 + i)
        for i in range(60)
    ]
    batches = [events[:40], list(reversed(events[20:])), events[10:50], events]
    await asyncio.gather(*(write_usage(runtime, batch) for batch in batches))
    rows = await ledger_rows(runtime, org.id)
    assert len(rows) == 3
    assert -sum(r.amount_nusd for r in rows) == sum(e["cost_nusd"] for e in events)
    assert sum(r.requests or 0 for r in rows) == 60
    assert -sum(r.amount_nusd for r in rows) == await usage_cost(runtime, org.id)


# --- through the proxy ----------------------------------------------------------------------------


async def wait_for(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_after_mixed_traffic_the_balance_is_top_ups_minus_usage_exactly(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, proxy_client, levels=2)
    owner: Api = org.owner
    ok(await owner.patch(org.base, json={"credit_enforced": True}))
    ok(await top_up(owner, org, "2.5"), 201)
    ok(await top_up(owner, org, 0.75), 201)
    key = ok(await owner.post(f"{org.base}/keys", json={"name": "k", "group_id": org.team}), 201)
    headers = {"authorization": f"Bearer {key['key']}"}
    chat = {"messages": [{"role": "user", "content": "tell me about sluice gates"}]}
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/chat/completions", {"model": "gpt-4o-mini", **chat, "max_tokens": 40}),
        ("/v1/chat/completions", {"model": "claude-3-5-haiku", **chat, "max_tokens": 30}),
        (
            "/v1/chat/completions",
            {
                "model": "gpt-4o-mini",
                **chat,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ),
        ("/v1/chat/completions", {"model": "gpt-4o-mini", **chat, "stream": True}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b c d"]}),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "once upon", "max_tokens": 9}),
        ("/v1/chat/completions", {"model": "mock-error-500", **chat}),
        ("/v1/chat/completions", {"model": "no-such-model", **chat}),
    ] * 3
    statuses = await asyncio.gather(
        *(proxy_client.post(path, json=body, headers=headers) for path, body in requests)
    )
    assert sorted({r.status_code for r in statuses}) == [200, 404, 502]
    rows = await usage_events(runtime, org.id, expect=len(requests))
    assert len(rows) == len(requests)
    cost = sum(row.cost_nusd for row in rows)
    assert cost > 0
    topped = usd_to_nanos("3.25")

    async def settled() -> bool:
        credits = await balance(owner, org)
        return credits["balance_usd"] == nanos_to_usd(topped - cost)

    assert await wait_for(settled), await balance(owner, org)
    credits = await balance(owner, org)
    assert credits["reserved_usd"] == "0.000000000"
    assert credits["ledger_balance_usd"] == nanos_to_usd(topped - cost)
    debits = await ledger_rows(runtime, org.id, "usage")
    assert -sum(r.amount_nusd for r in debits) == cost == await usage_cost(runtime, org.id)
    assert sum(r.requests or 0 for r in debits) == sum(1 for row in rows if row.cost_nusd)
    # A top-up now folds into a counter that already holds the settled usage.
    ok(await top_up(owner, org, "1"), 201)
    credits = await balance(owner, org)
    assert credits["balance_usd"] == credits["ledger_balance_usd"]
    assert credits["balance_usd"] == nanos_to_usd(topped + 10**9 - cost)
