"""Money stays exact when routing falls back: a key budget that fits 20 requests, 300 requests
at concurrency 100 on a two-worker `sluicegate serve`, half of them forced onto a dearer
fallback model. Reservations cover the dearest candidate, so the budget is never exceeded, and
every nano-USD charged is in the ledger."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from sluicegate.metering.ledger import LedgerEntry
from sluicegate.mockupstream import tokens as mock_tokens
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter
from tests.factories import make_tenant, put_tenant_budget
from tests.proxy.conftest import usage_events
from tests.routing.conftest import Mock

HELLO = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 10
REQUESTS = 300
CONCURRENCY = 100
# What one answer costs on the fallback model `dear` (10 and 20 USD per million tokens).
DEAR_COST = mock_tokens.chat_prompt_tokens(HELLO) * 10_000 + MAX_TOKENS * 20_000


@pytest.mark.parametrize("backend", ["postgres"])
async def test_fallbacks_to_a_dearer_model_never_overspend_and_book_exactly(
    backend: str,
    settings: Settings,
    runtime: Runtime,
    start_gateway: GatewayStarter,
    routing_providers_file: Path,
    alpha: Mock,
    beta: Mock,
) -> None:
    tenant = await make_tenant(runtime)
    limit = 20 * DEAR_COST
    await put_tenant_budget(runtime, tenant, limit)
    # `cheap` fails on alpha and falls back to `dear` on beta; `cheap-b` is served by alpha.
    alpha.fail("error-500", model="gpt-4o-mini")
    gateway = start_gateway(
        settings,
        env={
            "SLUICEGATE_PROVIDERS": str(routing_providers_file),
            "SLUICEGATE_WORKERS": "2",
            "SLUICEGATE_ROUTING_RETRY_BACKOFF_MS": "0",
        },
    )
    gate = asyncio.Semaphore(CONCURRENCY)
    answers: list[tuple[int, str | None]] = []

    async def one(client: httpx.AsyncClient, model: str) -> None:
        body = {"model": model, "messages": HELLO, "max_tokens": MAX_TOKENS}
        async with gate:
            answer = await client.post("/v1/chat/completions", json=body)
        answers.append((answer.status_code, answer.headers.get("x-sluicegate-model")))

    headers = {"authorization": f"Bearer {tenant.key}"}
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=gateway.base_url, headers=headers, timeout=120, limits=limits
    ) as client:
        models = ["cheap", "cheap-b"] * (REQUESTS // 2)
        await asyncio.gather(*(one(client, model) for model in models))

    outcomes = Counter(answers)
    assert set(status for status, _ in outcomes) <= {200, 402}, outcomes
    assert outcomes[(200, "dear")] > 0 and outcomes[(200, "cheap-b")] > 0, outcomes
    events = await usage_events(runtime, tenant.org_id, expect=REQUESTS, timeout=120)
    assert len(events) == REQUESTS
    spent = sum(event.cost_nusd for event in events)
    assert 0 < spent <= limit
    assert sum(1 for e in events if e.status_code == 200) == sum(
        n for (status, _), n in outcomes.items() if status == 200
    )
    fell_back = [e for e in events if e.routing and e.routing.get("fallback_model") == "dear"]
    assert all(e.cost_nusd == DEAR_COST for e in fell_back)
    async with runtime.sessions() as session:
        debits = list(
            await session.scalars(
                select(LedgerEntry.amount_nusd).where(
                    LedgerEntry.org_id == tenant.org_id, LedgerEntry.kind == "usage"
                )
            )
        )
    assert -sum(debits) == spent
