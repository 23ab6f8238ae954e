"""Enforcement through the proxy: whichever scope runs out first blocks and is named; blocked
requests never reach the upstream and are recorded; a budget that fits N requests admits exactly
N at any concurrency on two gateway workers; counters survive Redis losing everything, and Redis
going away answers 503 (or, failing open, counts in-process) until it is back."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sluicegate.core.clock import ManualClock
from sluicegate.core.ids import new_id
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import Api, error, ok
from tests.conftest import GatewayStarter, make_settings
from tests.factories import Org, add_group, make_key, make_org, put_budget
from tests.faults.conftest import in_process_gateway as gateway
from tests.faults.conftest import redis_settings as with_redis
from tests.faults.servers import RedisServer
from tests.proxy.conftest import MOCK_KEY_ENV, usage_events
from tests.support import ServerProcess

CHAT = "/v1/chat/completions"
# Prompt "abcd" is 8 tokens for the mock (3 + 4 + one word) and for our estimate (3 + 4 + four
# characters); max_tokens 16 is what the mock answers: the reservation equals the actual cost.
COST = 8 * 150 + 16 * 600  # nano-USD per call of gpt-4o-mini (0.15 / 0.60 USD per 1M tokens)


def usd(nanos: int) -> str:
    return f"{nanos // 10**9}.{nanos % 10**9:09d}"


def body(marker: str = "abcd") -> dict:
    assert len(marker) <= 4
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": marker}],
        "max_tokens": 16,
    }


@dataclass
class Chain:
    """An org whose key sits three levels down: root > l1 > l2 > l3 (the key's group), owned by
    the org's owner."""

    org: Org
    groups: list[str]  # l1, l2, l3
    key_id: str
    key: str

    @property
    def owner(self) -> Api:
        return self.org.owner

    @property
    def base(self) -> str:
        return self.org.base

    @property
    def org_id(self) -> str:
        return self.org.id

    def scope_ids(self) -> dict[str, tuple[str, str | None]]:
        return {
            "key": ("key", self.key_id),
            "member": ("member", self.owner.user_id),
            "group level 3": ("group", self.groups[2]),
            "group level 2": ("group", self.groups[1]),
            "group level 1": ("group", self.groups[0]),
            "org": ("org", None),
        }

    async def budget(self, scope: str, limit_nanos: int) -> dict:
        scope_type, scope_id = self.scope_ids()[scope]
        made = await put_budget(self.org, scope_type, scope_id, usd(limit_nanos), period="day")
        return made.body


async def make_chain(runtime: Runtime, client: httpx.AsyncClient) -> Chain:
    org = await make_org(runtime, client, "Chain")
    groups: list[str] = []
    for name in ("l1", "l2", "l3"):
        groups.append((await add_group(org, name, groups[-1] if groups else None)).id)
    key = await make_key(org, groups[-1], name="deep")
    return Chain(org, groups, key.id, key.secret)


async def chat(client: httpx.AsyncClient, key: str, marker: str = "abcd") -> httpx.Response:
    return await client.post(CHAT, json=body(marker), headers={"authorization": f"Bearer {key}"})


async def settled(client: httpx.AsyncClient) -> None:
    app = client._transport.app  # type: ignore[attr-defined]
    await app.state.pipeline.guard.drain()


SCOPES = ["key", "member", "group level 3", "group level 2", "group level 1", "org"]


@pytest.mark.parametrize("scope", SCOPES)
async def test_the_scope_that_runs_out_first_blocks_and_is_named(
    scope: str, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    for other in SCOPES:
        await chain.budget(other, 2 * COST if other == scope else 100 * COST)
    assert [(await chat(proxy_client, chain.key)).status_code for _ in range(2)] == [200, 200]
    refused = await chat(proxy_client, chain.key)
    assert refused.status_code == 402, refused.text
    message = refused.json()["error"]["message"]
    _kind, scope_id = chain.scope_ids()[scope]
    assert (scope_id or "the organization") in message, message
    for other in SCOPES:
        other_id = chain.scope_ids()[other][1]
        if other != scope and other_id:
            assert other_id not in message.split(":")[1], message
    events = await usage_events(runtime, chain.org_id, expect=3)
    blocked = [e for e in events if e.status_code == 402]
    assert [(e.error_type, e.cost_nusd) for e in blocked] == [("budget_exceeded", 0)]


async def test_a_blocked_request_never_reaches_the_upstream(
    runtime: Runtime, proxy_client: httpx.AsyncClient, mock_upstream: ServerProcess
) -> None:
    chain = await make_chain(runtime, proxy_client)
    await chain.budget("group level 2", 0)
    marker = secrets.token_hex(2)
    assert (await chat(proxy_client, chain.key, marker)).status_code == 402
    seen = httpx.get(f"{mock_upstream.base_url}/_mock/requests").json()["requests"]
    assert not [r for r in seen if marker in str(r.get("body"))]


async def test_the_credit_blocks_when_enforced_and_topped_up_too_little(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    await chain.budget("key", 100 * COST)
    assert (
        await chat(proxy_client, chain.key)
    ).status_code == 200  # not enforced: no credit needed
    # Its debit is in the ledger once its usage event is written: the balance is now -COST.
    await settled(proxy_client)
    await usage_events(runtime, chain.org_id, expect=1)
    ok(await chain.owner.patch(chain.base, json={"credit_enforced": True}))
    assert (await chat(proxy_client, chain.key)).status_code == 402
    ok(
        await chain.owner.post(f"{chain.base}/credits/topups", json={"amount_usd": usd(3 * COST)}),
        201,
    )
    assert [(await chat(proxy_client, chain.key)).status_code for _ in range(2)] == [200, 200]
    refused = await chat(proxy_client, chain.key)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_credit"
    assert "credit" in refused.json()["error"]["message"]


async def test_rate_limits_answer_429_with_retry_after_and_openai_headers(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    policy = ok(
        await chain.owner.post(f"{chain.base}/policies", json={"name": "slow", "rpm": 2}), 201
    )
    ok(
        await chain.owner.post(
            f"{chain.base}/policies/{policy['id']}/bindings",
            json={"target_type": "group", "target_id": chain.groups[1]},
        ),
        201,
    )
    first = await chat(proxy_client, chain.key)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert (await chat(proxy_client, chain.key)).status_code == 200
    limited = await chat(proxy_client, chain.key)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    error_body = limited.json()["error"]
    assert error_body["code"] == "rate_limit_exceeded"
    assert (
        chain.groups[1] in error_body["message"]
        and "2 requests per minute" in error_body["message"]
    )


# --- two workers, real uvicorn -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_budget_for_exactly_20_admits_exactly_20_of_500_on_two_workers(
    backend: str,
    settings: Settings,
    runtime: Runtime,
    providers_file: Path,
    start_gateway: GatewayStarter,
    mock_upstream: ServerProcess,
) -> None:
    server = start_gateway(
        settings,
        env={"SLUICEGATE_PROVIDERS": str(providers_file), **MOCK_KEY_ENV},
        args=("--workers", "2"),
    )
    marker = secrets.token_hex(2)
    async with httpx.AsyncClient(
        base_url=server.base_url, timeout=60, limits=httpx.Limits(max_connections=100)
    ) as client:
        chain = await make_chain(runtime, client)
        made = await chain.budget("key", 20 * COST)
        gate = asyncio.Semaphore(100)

        async def one() -> int:
            async with gate:
                return (await chat(client, chain.key, marker)).status_code

        statuses = await asyncio.gather(*(one() for _ in range(500)))
        assert (statuses.count(200), statuses.count(402)) == (20, 480)
        events = await usage_events(runtime, chain.org_id, expect=500, timeout=15)
        assert len(events) == 500
        assert sum(e.cost_nusd for e in events) == 20 * COST
        shown = await _settled_budget(chain, made["id"], 20 * COST)
        assert shown["spent_usd"] == usd(20 * COST) == shown["limit_usd"]
        assert shown["reserved_usd"] == usd(0)
    received = httpx.get(f"{mock_upstream.base_url}/_mock/requests").json()["requests"]
    assert len([r for r in received if marker in str(r.get("body"))]) == 20


async def _settled_budget(chain: Chain, budget_id: str, spent: int) -> dict:
    """The budget once every settlement landed (they run off the response path)."""
    deadline = time.monotonic() + 10
    while True:
        shown = ok(await chain.owner.get(f"{chain.base}/budgets/{budget_id}"))
        if shown["reserved_usd"] == usd(0) or time.monotonic() > deadline:
            return shown
        await asyncio.sleep(0.05)


async def test_after_flushall_the_counters_are_rebuilt_and_enforcement_stays_exact(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    async with gateway(with_redis(postgres_url, own_redis.url), provider_settings) as (
        client,
        runtime,
    ):
        chain = await make_chain(runtime, client)
        made = await chain.budget("group level 1", 10 * COST)
        await chain.budget("member", 7 * COST)
        assert [(await chat(client, chain.key)).status_code for _ in range(6)] == [200] * 6
        await settled(client)
        await usage_events(runtime, chain.org_id, expect=6)
        own_redis.flushall()
        # The member budget (7 calls) is now the tighter one: exactly one more call fits.
        statuses = [(await chat(client, chain.key)).status_code for _ in range(5)]
        assert statuses == [200, 402, 402, 402, 402]
        await settled(client)
        shown = ok(await chain.owner.get(f"{chain.base}/budgets/{made['id']}"))
        assert shown["spent_usd"] == usd(7 * COST)


async def test_redis_down_answers_503_and_service_resumes_when_it_is_back(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    async with gateway(with_redis(postgres_url, own_redis.url), provider_settings) as (
        client,
        runtime,
    ):
        chain = await make_chain(runtime, client)
        await chain.budget("key", 3 * COST)
        assert (await chat(client, chain.key)).status_code == 200
        await settled(client)
        await usage_events(runtime, chain.org_id, expect=1)
        own_redis.stop()
        down = await chat(client, chain.key)
        assert down.status_code == 503, down.text
        problem = down.json()["error"]
        assert problem["code"] == "guardrails_unavailable" and "Redis" in problem["message"]
        own_redis.start()  # empty: everything is rebuilt from Postgres
        deadline = time.monotonic() + 10
        while (status := (await chat(client, chain.key)).status_code) == 503:
            assert time.monotonic() < deadline, "the gateway did not recover by itself"
            await asyncio.sleep(0.2)
        assert status == 200
        assert (await chat(client, chain.key)).status_code == 200
        assert (await chat(client, chain.key)).status_code == 402  # 3 calls: still exact


async def test_failing_open_judges_rate_limits_in_process_and_refuses_hard_budgets(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    settings = with_redis(postgres_url, own_redis.url, guard_failure_mode="open")
    async with gateway(settings, provider_settings) as (client, runtime):
        limited = await make_chain(runtime, client)
        policy = ok(
            await limited.owner.post(f"{limited.base}/policies", json={"name": "rpm", "rpm": 2}),
            201,
        )
        ok(
            await limited.owner.post(
                f"{limited.base}/policies/{policy['id']}/bindings",
                json={"target_type": "key", "target_id": limited.key_id},
            ),
            201,
        )
        capped = await make_chain(runtime, client)
        await capped.budget("key", 2 * COST)
        own_redis.stop()
        statuses = [(await chat(client, limited.key)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        refused = await chat(client, capped.key)
        assert refused.status_code == 503, refused.text
        assert "hard budget" in refused.json()["error"]["message"]


async def test_a_key_without_guardrails_never_waits_on_redis(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    async with gateway(with_redis(postgres_url, own_redis.url), provider_settings) as (
        client,
        runtime,
    ):
        chain = await make_chain(runtime, client)
        own_redis.stop()
        assert (await chat(client, chain.key)).status_code == 200
        error(
            await chain.owner.put(
                f"{chain.base}/budgets",
                json={
                    "scope_type": "key",
                    "scope_id": chain.key_id,
                    "limit_usd": "1",
                    "period": "day",
                },
            ),
            503,
        )


async def test_forwarded_for_counts_only_behind_a_trusted_proxy(
    sqlite_url: str, provider_settings: ProviderSettings
) -> None:
    for trusted, expected in (("127.0.0.1", 200), ("", 403)):
        settings = make_settings(database_url=sqlite_url, trusted_proxies=trusted)
        async with gateway(settings, provider_settings) as (client, runtime):
            chain = await make_chain(runtime, client)
            policy = ok(
                await chain.owner.post(
                    f"{chain.base}/policies",
                    json={"name": "office", "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"]},
                ),
                201,
            )
            ok(
                await chain.owner.post(
                    f"{chain.base}/policies/{policy['id']}/bindings",
                    json={"target_type": "key", "target_id": chain.key_id},
                ),
                201,
            )
            # The test client connects from 127.0.0.1, as a reverse proxy on the host would.
            answer = await client.post(
                CHAT,
                json=body(),
                headers={
                    "authorization": f"Bearer {chain.key}",
                    "x-forwarded-for": "198.51.100.1, 203.0.113.9",
                },
            )
            assert answer.status_code == expected, (trusted, answer.text)
            if expected == 403:
                assert answer.json()["error"]["code"] == "ip_not_allowed"


async def test_a_top_up_that_missed_the_counter_is_folded_in_within_a_minute(
    postgres_url: str, own_redis: RedisServer, provider_settings: ProviderSettings
) -> None:
    clock = ManualClock(datetime.now(UTC))
    async with gateway(with_redis(postgres_url, own_redis.url), provider_settings, clock) as (
        client,
        runtime,
    ):
        chain = await make_chain(runtime, client)
        ok(await chain.owner.patch(chain.base, json={"credit_enforced": True}))
        assert (await chat(client, chain.key)).status_code == 402  # nothing topped up yet
        # A top-up committed while its sync to Redis was lost (Redis down for that moment).
        async with runtime.unit_of_work() as session:
            session.add(
                LedgerEntry(
                    id=new_id("led"), org_id=chain.org_id, kind="topup", amount_nusd=5 * COST
                )
            )
        assert (await chat(client, chain.key)).status_code == 402
        clock.advance(61)
        await chat(client, chain.key)  # starts the worker's periodic sync
        await settled(client)
        assert [(await chat(client, chain.key)).status_code for _ in range(2)] == [200, 200]


async def test_a_failed_upstream_call_frees_its_reservation_and_costs_nothing(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    made = await chain.budget("key", 10**9)  # 1 USD
    for _ in range(3):
        failed = await proxy_client.post(
            CHAT,
            json={**body(), "model": "mock-error-500"},
            headers={"authorization": f"Bearer {chain.key}"},
        )
        assert failed.status_code == 502
    assert (await chat(proxy_client, chain.key)).status_code == 200
    await settled(proxy_client)
    shown = ok(await chain.owner.get(f"{chain.base}/budgets/{made['id']}"))
    assert (shown["spent_usd"], shown["reserved_usd"]) == (usd(COST), usd(0))
