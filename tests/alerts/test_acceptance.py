"""The alerting promise end to end, against real `sluicegate serve` and `sluicegate worker`
processes and a webhook receiver over loopback: a threshold crossed by concurrent traffic
arrives once, signed, within seconds; a receiver that is down for a minute, while the gateway
and the worker restart, still gets the alert exactly once."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sluicegate.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import make_person
from tests.alerts.receiver import Receiver, running_receiver
from tests.conftest import GatewayStarter, make_settings, settings_env
from tests.metering.test_durability import kill, start_worker
from tests.proxy.conftest import MOCK_KEY_ENV
from tests.support import ServerProcess, free_port

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello, budget"}]}
# The promise: a crossing reaches the receiver within this many seconds.
DELIVERY_SECONDS = 5.0
# How long the receiver stays down in the retry test, as the acceptance asks.
DOWN_SECONDS = 60.0


@dataclass
class Governed:
    """An org set up through the admin API: a key under a soft monthly budget with a 90%
    threshold, and a rule sending budget.threshold to a signed webhook channel."""

    admin: httpx.AsyncClient
    base: str
    key: str
    budget_scope: dict[str, Any]
    signing_secret: str


def alert_env(settings: Settings, providers_file: Path, **extra: str) -> dict[str, str]:
    return {
        **settings_env(settings),
        **MOCK_KEY_ENV,
        "SLUICEGATE_PROVIDERS": str(providers_file),
        "SLUICEGATE_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
        **extra,
    }


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def governed(runtime: Runtime, gateway: ServerProcess, receiver_url: str) -> Governed:
    person = await make_person(runtime)
    admin = httpx.AsyncClient(base_url=gateway.base_url, headers=person.headers, timeout=15)
    org = ok(await admin.post("/api/v1/orgs", json={"name": "Alerted"}), 201)
    base = f"/api/v1/orgs/{org['id']}"
    group = ok(await admin.post(f"{base}/groups", json={"name": "team"}), 201)
    key = ok(await admin.post(f"{base}/keys", json={"name": "k", "group_id": group["id"]}), 201)
    channel = ok(
        await admin.post(
            f"{base}/alerts/channels",
            json={"name": "ops hook", "kind": "webhook", "url": receiver_url},
        ),
        201,
    )
    ok(
        await admin.post(
            f"{base}/alerts/rules",
            json={
                "name": "budget alarms",
                "event": "budget.threshold",
                "channel_ids": [channel["id"]],
            },
        ),
        201,
    )
    scope = {"scope_type": "key", "scope_id": key["id"], "period": "month"}
    return Governed(admin, base, key["key"], scope, channel["signing_secret"])


async def chat(client: httpx.AsyncClient, base_url: str, key: str) -> None:
    answer = await client.post(
        base_url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text


async def spent_usd(world: Governed) -> float:
    budgets = ok(await world.admin.get(f"{world.base}/budgets"))
    return float(budgets["items"][0]["spent_usd"])


async def set_budget(world: Governed, limit_usd: float) -> None:
    body = {**world.budget_scope, "limit_usd": f"{limit_usd:.9f}", "enforcement": "soft"}
    ok(await world.admin.put(f"{world.base}/budgets", json={**body, "thresholds": [90]}))


async def cross_ninety_percent(world: Governed, base_url: str) -> None:
    """One request prices a request; the budget is set to ten of them (so 90% is the ninth),
    then 24 requests, 8 at a time, cross it."""
    async with httpx.AsyncClient(timeout=30) as client:
        await set_budget(world, 1000.0)
        await chat(client, base_url, world.key)
        deadline = time.monotonic() + 10
        while (one := await spent_usd(world)) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert one > 0
        await set_budget(world, one * 10)
        gate = asyncio.Semaphore(8)

        async def limited() -> None:
            async with gate:
                await chat(client, base_url, world.key)

        await asyncio.gather(*(limited() for _ in range(24)))


def threshold_deliveries(receiver: Receiver) -> list[Any]:
    return [
        r for r in receiver.requests if r.headers.get("x-sluicegate-event") == "budget.threshold"
    ]


async def wait_for(receiver: Receiver, count: int, seconds: float) -> float:
    """Seconds until the receiver holds `count` threshold deliveries (or the time is up)."""
    start = time.monotonic()
    while len(threshold_deliveries(receiver)) < count and time.monotonic() - start < seconds:
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_concurrent_traffic_crossing_90_percent_sends_one_signed_delivery(
    settings: Settings,
    runtime: Runtime,
    providers_file: Path,
    start_gateway: GatewayStarter,
) -> None:
    async with running_receiver() as receiver:
        gateway = start_gateway(env=alert_env(settings, providers_file))
        world = await governed(runtime, gateway, receiver.url)
        try:
            await cross_ninety_percent(world, gateway.base_url)
            waited = await wait_for(receiver, 1, 30)
            assert waited <= DELIVERY_SECONDS, f"the alert took {waited:.1f} s"
            await asyncio.sleep(2.0)  # time for a duplicate to show, if one were coming
            [delivery] = threshold_deliveries(receiver)
        finally:
            await world.admin.aclose()
    assert verify(
        world.signing_secret,
        delivery.headers[TIMESTAMP_HEADER.lower()],
        delivery.headers[SIGNATURE_HEADER.lower()],
        delivery.body,
        now=time.time(),
    )
    body = httpx.Response(200, content=delivery.body).json()
    assert body["event"] == "budget.threshold"
    assert body["details"]["percent"] == 90


async def test_a_receiver_down_for_a_minute_gets_the_alert_once_across_restarts(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    providers_file: Path,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=f"{redis_prefix}:down"
    )
    runtime = Runtime.build(settings)
    env = alert_env(
        settings,
        providers_file,
        # Only the worker drains and delivers, so restarting it is restarting delivery.
        SLUICEGATE_RUN_WORKER="false",
        SLUICEGATE_USAGE_CLAIM_IDLE_SECONDS="1",
        SLUICEGATE_ALERT_RETRY_MAX_SECONDS="5",
    )
    starter = GatewayStarter(tmp_path, [])
    port = free_port()  # nothing listens here until the receiver comes up
    receiver = Receiver()
    gateway = starter(env=env)
    worker = start_worker(env, tmp_path)
    world = await governed(runtime, gateway, f"http://127.0.0.1:{port}/hook")
    try:
        down_since = time.monotonic()
        await cross_ninety_percent(world, gateway.base_url)
        await asyncio.sleep(DOWN_SECONDS / 2)
        kill(worker)
        kill(gateway)
        gateway = await asyncio.to_thread(starter, env=env)
        worker = await asyncio.to_thread(start_worker, env, tmp_path)
        world.admin.base_url = httpx.URL(gateway.base_url)
        await asyncio.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_since)))
        assert receiver.requests == []
        await receiver.start(port)
        await wait_for(receiver, 1, 30)
        await asyncio.sleep(3.0)
        [delivery] = threshold_deliveries(receiver)
        assert verify(
            world.signing_secret,
            delivery.headers[TIMESTAMP_HEADER.lower()],
            delivery.headers[SIGNATURE_HEADER.lower()],
            delivery.body,
            now=time.time(),
        )
        alerts = ok(
            await world.admin.get(f"{world.base}/alerts", params={"event": "budget.threshold"})
        )["items"]
        [alert] = alerts
        detail = ok(await world.admin.get(f"{world.base}/alerts/{alert['id']}"))
        [logged] = detail["deliveries"]
        assert logged["status"] == "delivered"
        outcomes = [a["outcome"] for a in logged["attempts_log"]]
        assert outcomes[-1] == "delivered" and set(outcomes[:-1]) == {"retry"}
        assert len(outcomes) >= 3, outcomes
    finally:
        await world.admin.aclose()
        await receiver.stop()
        worker.stop()
        for server in starter.started:
            server.stop()
        await runtime.close()
