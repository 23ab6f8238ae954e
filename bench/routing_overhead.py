"""What routing decides per call, in CPU microseconds, in-process (no network): the plan
(routing/plan.py Router.plan: filters, strategy, health) and the attempt bookkeeping around a
successful first attempt (proxy/attempts.py: next, answered, succeeded, and the balancer's
started/finished), for models of one, two and four deployments, with and without a request's
`provider` object and a group override, and with one deployment cooling down.

The whole gateway's cost, routing included, is measured side by side with the commit before
routing by bench/compare.py (bench/results/routing-vs-8d21ce5.md); this script says how much
of it is routing's, and what more deployments, preferences and overrides add.

    python bench/routing_overhead.py [--calls 200000] [--output results.md]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sluicegate.core.clock import SystemClock
from sluicegate.core.invalidation import MemoryInvalidationBus
from sluicegate.providers.catalog import ModelPrice
from sluicegate.providers.deployment import DataPolicy, ModelRoute, ProviderConfig, ServedModel
from sluicegate.proxy.attempts import Attempts
from sluicegate.routing.balance import Balancer
from sluicegate.routing.health import HealthBoard, HealthRules
from sluicegate.routing.overrides import NO_OVERRIDE, RoutingOverride, effective
from sluicegate.routing.plan import Router
from sluicegate.routing.preferences import take_preferences

USD = 1_000_000_000


def provider(name: str, zdr: bool) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        type="openai",
        base_url=f"http://127.0.0.1:9/{name}",
        api_key=None,
        api_version=None,
        headers=(),
        max_connections=10,
        timeout_seconds=None,
        policy=DataPolicy(zdr=zdr, certifications=frozenset({"soc2"}), region="eu"),
    )


def served(model: str, count: int, strategy: str = "priority") -> ServedModel:
    routes = tuple(
        ModelRoute(
            id=model,
            provider=provider(f"p{i}", zdr=i % 2 == 0),
            upstream_model=model,
            mode="chat",
            price=ModelPrice((i + 1) * USD, 2 * (i + 1) * USD, (i + 1) * USD),
            context_window=128_000,
            max_output_tokens=4096,
            catalog_id=None,
            deployment=f"p{i}/{model}",
            region="eu",
            priority=i,
            weight=i + 1,
        )
        for i in range(count)
    )
    return ServedModel(id=model, mode="chat", deployments=routes, strategy=strategy)


async def measure(name: str, calls: int, step: Callable[[], Any]) -> tuple[str, float]:
    for _ in range(min(calls // 10, 10_000)):  # warm up
        await step()
    started = time.process_time()
    for _ in range(calls):
        await step()
    return name, (time.process_time() - started) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--output", help="also write the Markdown report here")
    args = parser.parse_args()

    bus = MemoryInvalidationBus()
    health = HealthBoard(HealthRules(), SystemClock(), bus)
    bus.subscribe(health.on_message)
    balancer = Balancer()
    router = Router(health, balancer)
    one, two = served("one", 1), served("two", 2)
    four, fallback = served("four", 4, "weighted"), served("fallback", 2, "least_busy")
    override = effective(
        [
            ("grp_root", RoutingOverride(required_certifications=frozenset({"soc2"}))),
            ("grp_team", RoutingOverride(provider_order=("p1", "p0"))),
        ]
    )
    body = {"provider": {"order": ["p1"], "zdr": False, "sort": "price"}}

    def plan(chain: list[ServedModel], preferences: Any = None, routing: Any = NO_OVERRIDE) -> Any:
        async def step() -> Any:
            prefs = take_preferences(dict(preferences)) if preferences else take_preferences({})
            return router.plan(chain, prefs, routing)

        return step

    def attempt(chain: list[ServedModel]) -> Any:
        async def step() -> None:
            candidates = router.plan(chain, take_preferences({}), NO_OVERRIDE)
            call = SimpleNamespace(
                candidates=candidates,
                attempts=0,
                route=None,
                in_flight=None,
                started=time.perf_counter(),
                requested_model=chain[0].id,
            )
            attempts = Attempts(
                call,  # type: ignore[arg-type]
                health,
                balancer,
                max_attempts=3,
                deadline_seconds=60,
                backoff_ms=50,
            )
            route, _ = await attempts.next(lambda r: None)  # type: ignore[arg-type,return-value]
            attempts.answered(route)
            await attempts.succeeded(route)
            call.in_flight = None
            balancer.finished(route, 100, 0.5)

        return step

    results = [
        await measure("plan: 1 deployment (the default file)", args.calls, plan([one])),
        await measure("plan: 2 deployments, priority", args.calls, plan([two])),
        await measure("plan: 4 deployments, weighted", args.calls, plan([four])),
        await measure(
            "plan: 4 weighted + fallback model (2, least_busy)", args.calls, plan([four, fallback])
        ),
        await measure(
            "plan: 2 deployments + the request's provider object", args.calls, plan([two], body)
        ),
        await measure(
            "plan: 2 deployments + a group override (certification, order)",
            args.calls,
            plan([two], None, override),
        ),
        await measure("plan + attempt bookkeeping: 1 deployment", args.calls, attempt([one])),
        await measure("plan + attempt bookkeeping: 2 deployments", args.calls, attempt([two])),
    ]
    await health.failed("p0/two", retry_after=3600)
    for _ in range(HealthRules().allowed_fails):
        await health.failed("p0/two")
    results.append(
        await measure("plan: 2 deployments, the first cooling down", args.calls, plan([two]))
    )

    lines = [
        "## Routing's CPU per call, in-process",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()}; "
        f"{args.calls} calls each",
        f"- command: `python bench/routing_overhead.py --calls {args.calls}`",
        "",
        "| what | CPU us per call |",
        "| --- | ---: |",
        *(f"| {name} | {micros:.1f} |" for name, micros in results),
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        Path(args.output).write_text(report)  # noqa: ASYNC240  (once, after measuring)


if __name__ == "__main__":
    asyncio.run(main())
