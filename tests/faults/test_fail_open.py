"""Failing open across a Redis outage on two gateway workers: a key under a hard budget is refused
while Redis is away (no process can know what the others spend), so its spend never passes the
limit; a key under a soft budget keeps being served, and once Redis is back its counter holds
exactly what the database holds, outage included."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from sluicegate.guard.budget_service import get_budget
from sluicegate.runtime import Runtime
from tests.conftest import GatewayStarter
from tests.faults.conftest import (
    CHAT,
    COST,
    Budgeted,
    books_when,
    chat_body,
    redis_settings,
    serve_env,
    tenant_with_budget,
)
from tests.faults.servers import RedisServer

FITS = 20
SETTLED_WITHIN_SECONDS = 10.0


async def call(http: httpx.AsyncClient, base_url: str, key: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        answer = await http.post(
            base_url + CHAT, json=chat_body(), headers={"authorization": f"Bearer {key}"}
        )
        statuses.append(answer.status_code)
    return statuses


async def spent_shown(runtime: Runtime, budgeted: Budgeted) -> int:
    """The budget's spend as the budget API shows it: the shared counter's."""
    async with runtime.sessions() as session:
        view = await get_budget(
            session,
            budgeted.tenant.actor,
            budgeted.tenant.org_id,
            runtime.counters,
            budgeted.budget_id,
            runtime.clock.now(),
        )
    assert view.value is not None
    return view.value.used


async def test_failing_open_across_an_outage_keeps_hard_budgets_and_books_exact(
    postgres_url: str,
    fault_providers_file: Path,
    start_gateway: GatewayStarter,
    tmp_path: Path,
) -> None:
    redis_server = RedisServer(tmp_path, persistent=True)
    redis_server.start()
    settings = redis_settings(postgres_url, redis_server.url, guard_failure_mode="open")
    runtime = Runtime.build(settings)
    await runtime.start()
    try:
        hard = (await tenant_with_budget(runtime, FITS * COST)).tenant
        soft_budget = await tenant_with_budget(runtime, 2 * COST, enforcement="soft")
        soft = soft_budget.tenant
        env = serve_env(settings, fault_providers_file, workers="2", guard_failure_mode="open")
        gateway = start_gateway(env=env)
        async with httpx.AsyncClient(timeout=30) as http:
            before = await call(http, gateway.base_url, hard.key, 10)
            before += await call(http, gateway.base_url, soft.key, 5)
            assert before == [200] * 15

            redis_server.stop()
            during_hard = await call(http, gateway.base_url, hard.key, 30)
            during_soft = await call(http, gateway.base_url, soft.key, 10)
            assert during_hard == [503] * 30, during_hard
            assert during_soft == [200] * 10, during_soft

            redis_server.start()  # with its data: an outage, not a loss
            after_hard: list[int] = []
            deadline = time.monotonic() + 30
            while not after_hard or after_hard[-1] != 402:
                after_hard += await call(http, gateway.base_url, hard.key, 1)
                assert time.monotonic() < deadline, after_hard
                if after_hard[-1] == 503:
                    await asyncio.sleep(0.1)  # the breaker holds for a second after the outage
            after_soft = await call(http, gateway.base_url, soft.key, 3)
        assert after_hard.count(200) == FITS - 10, after_hard
        assert set(after_hard) <= {200, 402, 503}
        assert after_soft == [200] * 3

        hard_rows = 10 + 30 + len(after_hard)
        books = await books_when(runtime, hard.org_id, lambda b: b.rows == hard_rows)
        assert books.rows == hard_rows
        books.assert_consistent()
        assert books.cost_nusd == FITS * COST

        soft_rows = 5 + 10 + 3
        books = await books_when(runtime, soft.org_id, lambda b: b.rows == soft_rows)
        assert books.rows == soft_rows
        books.assert_consistent()
        assert books.cost_nusd == soft_rows * COST
        # Every worker added what it spent during the outage to the shared counter.
        deadline = time.monotonic() + SETTLED_WITHIN_SECONDS
        while (
            value := await spent_shown(runtime, soft_budget)
        ) != books.cost_nusd and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert value == books.cost_nusd
    finally:
        await runtime.close()
        redis_server.stop()
