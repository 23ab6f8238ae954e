"""Retries, cooldowns and fallbacks end to end: the gateway in-process, two mock upstreams over
loopback failing on command (tests/routing/conftest.py)."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from prometheus_client import REGISTRY

from sluicegate.app import create_app
from sluicegate.providers.config import ProviderSettings
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.factories import Tenant
from tests.proxy.conftest import usage_events
from tests.routing.conftest import ALLOWED_FAILS, Mock

CHAT = "/v1/chat/completions"
USD = 1_000_000_000


def ask(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def sample(name: str, **labels: str) -> float:
    """A counter of this process's Prometheus registry (0 before its first increment)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def auth(tenant: Tenant) -> dict[str, str]:
    return {"authorization": f"Bearer {tenant.key}"}


async def test_a_failing_deployment_is_retried_on_the_next(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-sluicegate-provider"] == "beta"
    assert answer.headers["x-sluicegate-attempts"] == "2"
    assert answer.headers["x-sluicegate-model"] == "duo"
    assert (alpha.requests, beta.requests) == (1, 1)
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.provider == "beta" and event.status_code == 200
    assert event.routing == {"deployment": "beta/gpt-4o-mini", "attempts": 2, "fallback": True}
    usage = answer.json()["usage"]
    # Charged at the price of the deployment that served (beta: 3 and 4 USD per 1M tokens).
    assert event.cost_nusd == usage["prompt_tokens"] * 3000 + usage["completion_tokens"] * 4000


async def test_a_healthy_first_deployment_serves_in_one_attempt(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
    assert answer.status_code == 200
    assert (answer.headers["x-sluicegate-provider"], answer.headers["x-sluicegate-attempts"]) == (
        "alpha",
        "1",
    )
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.routing == {"deployment": "alpha/gpt-4o-mini", "attempts": 1, "fallback": False}
    assert (alpha.requests, beta.requests) == (1, 0)


async def test_429_timeouts_and_connect_errors_move_on_too(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    for behavior in ("error-429", "error-503", "cut"):
        alpha.reset()
        alpha.fail(behavior, times=1)
        answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
        assert answer.status_code == 200, (behavior, answer.text)
        assert answer.headers["x-sluicegate-provider"] == "beta", behavior


async def test_a_deployment_that_does_not_answer_in_time_is_retried_on_the_next(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    """alpha-hasty gives up after 1 s (its provider's timeout_seconds); the mock holds the call
    for a minute, so the timeout is what ends the attempt, however busy the machine."""
    alpha.fail("slow", delay_ms=60_000)
    answer = await routed.post(CHAT, json=ask("hasty"), headers=auth(tenant))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-sluicegate-provider"] == "beta"
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.routing == {"deployment": "beta/gpt-4o-mini", "attempts": 2, "fallback": True}


async def test_a_client_error_is_not_retried(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error", status=400)
    answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
    assert answer.status_code == 400
    assert answer.headers["x-sluicegate-attempts"] == "1"
    assert (alpha.requests, beta.requests) == (1, 0)


async def test_every_deployment_down_gives_one_clear_error_after_the_attempts(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    beta.fail("error-500")
    answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_error"
    assert "beta" in answer.json()["error"]["message"]
    assert answer.headers["x-sluicegate-attempts"] == "2"
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert (event.status_code, event.cost_nusd) == (502, 0)
    assert event.routing == {"deployment": "beta/gpt-4o-mini", "attempts": 2, "fallback": True}


async def test_an_upstream_rate_limit_on_every_deployment_is_passed_on_with_retry_after(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-429", retry_after="7")
    beta.fail("error-429", retry_after="9")
    answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "9"


async def test_a_failing_deployment_cools_down_and_gets_no_traffic(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    """1,000 requests while one of two deployments fails: no client error, and the failing one
    sees only the failures that cooled it down (a few more may already be on their way when it
    trips, one per concurrent request at most)."""
    alpha.fail("error-500")
    concurrency = 10
    statuses: list[int] = []
    cooled_before = sample("sluicegate_routing_cooldowns_total", deployment="alpha/gpt-4o-mini")

    async def client(count: int) -> None:
        for _ in range(count):
            answer = await routed.post(CHAT, json=ask("duo"), headers=auth(tenant))
            statuses.append(answer.status_code)

    await asyncio.gather(*(client(100) for _ in range(concurrency)))
    assert statuses == [200] * 1000
    failed = alpha.requests
    assert ALLOWED_FAILS <= failed <= ALLOWED_FAILS + concurrency - 1
    assert beta.requests == 1000
    cooled = sample("sluicegate_routing_cooldowns_total", deployment="alpha/gpt-4o-mini")
    assert cooled - cooled_before >= 1
    failures = sample(
        "sluicegate_routing_attempts_total",
        provider="alpha",
        deployment="alpha/gpt-4o-mini",
        outcome="500",
    )
    assert failures >= failed


async def test_a_stream_falls_back_before_its_first_byte(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-503")
    body = ask("duo", stream=True, stream_options={"include_usage": True})
    async with routed.stream("POST", CHAT, json=body, headers=auth(tenant)) as answer:
        assert answer.status_code == 200
        assert answer.headers["x-sluicegate-provider"] == "beta"
        text = (await answer.aread()).decode()
    assert text.rstrip().endswith("data: [DONE]")
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.stream and event.routing is not None and event.routing["attempts"] == 2


async def test_a_stream_cut_after_its_first_byte_is_not_retried(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("cut")
    body = ask("duo", stream=True)
    async with routed.stream("POST", CHAT, json=body, headers=auth(tenant)) as answer:
        assert answer.status_code == 200
        text = (await answer.aread()).decode()
    last = [line for line in text.splitlines() if line.startswith("data: ")][-1]
    assert orjson.loads(last[len("data: ") :])["error"]["code"] == "upstream_stream_cut"
    assert beta.requests == 0


async def test_a_model_falls_back_to_the_next_model_of_its_chain(
    routed: httpx.AsyncClient, tenant: Tenant, runtime: Runtime, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    answer = await routed.post(CHAT, json=ask("cheap", max_tokens=10), headers=auth(tenant))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-sluicegate-model"] == "dear"
    assert answer.json()["model"] == "gpt-4o"  # the upstream model that answered
    (event,) = await usage_events(runtime, tenant.org_id, expect=1)
    assert event.requested_model == "cheap" and event.served_model == "gpt-4o"
    assert event.routing == {
        "deployment": "beta/gpt-4o",
        "attempts": 2,
        "fallback": True,
        "fallback_model": "dear",
    }
    usage = answer.json()["usage"]
    assert event.cost_nusd == usage["prompt_tokens"] * 10_000 + usage["completion_tokens"] * 20_000


async def test_a_context_window_error_moves_to_a_model_with_a_larger_window(
    routed: httpx.AsyncClient, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-context")
    answer = await routed.post(CHAT, json=ask("short-window"), headers=auth(tenant))
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-sluicegate-model"] == "long-window"
    # Without such a fallback, the client's error is the client's to fix.
    answer = await routed.post(CHAT, json=ask("cheap"), headers=auth(tenant))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "context_length_exceeded"


async def test_after_its_cooldown_a_deployment_gets_one_probe_then_its_traffic_back(
    routing_settings: Settings,
    runtime: Runtime,
    routing_providers: ProviderSettings,
    tenant: Tenant,
    alpha: Mock,
    beta: Mock,
) -> None:
    """Sequential requests, so every count is exact whatever the machine's speed: the failing
    deployment sees the failures that cooled it, then one probe per cooldown, each failed probe
    cooling it again; once it answers, it serves again."""
    quick = routing_settings.model_copy(update={"routing_cooldown_seconds": 0.2})
    app = create_app(quick, runtime, routing_providers)
    deployment = "alpha/gpt-4o-mini"
    cooled_before = sample("sluicegate_routing_cooldowns_total", deployment=deployment)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            alpha.fail("error-500")
            for _ in range(40):
                answer = await client.post(CHAT, json=ask("duo"), headers=auth(tenant))
                assert answer.status_code == 200
                await asyncio.sleep(0.02)
            cooldowns = sample("sluicegate_routing_cooldowns_total", deployment=deployment)
            probes = cooldowns - cooled_before - 1
            assert alpha.requests == ALLOWED_FAILS + probes
            alpha.heal()
            served: list[str] = []
            for _ in range(500):  # until the next probe, after at most one cooldown
                answer = await client.post(CHAT, json=ask("duo"), headers=auth(tenant))
                served.append(answer.headers["x-sluicegate-provider"])
                if served[-1] == "alpha":
                    break
                await asyncio.sleep(0.02)
            assert served[-1] == "alpha"
            for _ in range(3):
                answer = await client.post(CHAT, json=ask("duo"), headers=auth(tenant))
                assert answer.headers["x-sluicegate-provider"] == "alpha"
