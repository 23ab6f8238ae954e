"""What guardrails cost per request: the counter store alone, and the whole gateway with and
without them, plus the Redis commands each request sends.

1. store: reserve + settle of one request covering six budgets (key, member, three groups, org),
   four rate limits (rpm and tpm at key and group) and the org's credit, back to back and at
   concurrency 32, against a Redis of its own (redis-server on a free port) and against the
   in-process store of the embedded mode. Reports wall and CPU microseconds per request (this
   process, and Redis's own from INFO cpu) and Redis commands per request (INFO commandstats).
2. gateway: `sluicegate serve` (one uvicorn worker, Postgres + that Redis) in front of the mock
   upstream; one key with no guardrail and one with all of the above, driven alternately
   (A B A B) with the same closed-loop client; reports latency percentiles, gateway CPU per
   request and Redis commands per request for each.

    python bench/guard_overhead.py [--requests 5000] [--duration 8] [--rounds 2]
        [--output results.json]

Needs Postgres on 127.0.0.1:5432 (trust auth, user postgres) and redis-server on the PATH.
Everything it starts or creates is removed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import redis
from proxy_overhead import (
    Result,
    Server,
    create_database,
    drive,
    drop_stores,
    percentiles,
    start_server,
)

from sluicegate.core.clock import SystemClock
from sluicegate.core.ids import new_id
from sluicegate.guard.counters import (
    BudgetCounter,
    CreditCounter,
    CreditSeed,
    GuardStore,
    Plan,
    RateCounter,
    Reserved,
    SpendScope,
)
from sluicegate.guard.memory import MemoryGuardStore
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.runtime import connect_redis

ORG = "org_bench"
BIG = 10**18  # limits that never block: the bench measures the work, not the refusals


# --- a Redis of our own ------------------------------------------------------------------------


class RedisProcess:
    def __init__(self, tmp: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        command = [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)]
        self.process = subprocess.Popen(  # noqa: S603 - our own arguments
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def counts(self) -> tuple[int, float, dict[str, int]]:
        """(commands processed, CPU seconds used, calls per command) so far."""
        stats = self.client.info("stats")["total_commands_processed"]
        cpu = self.client.info("cpu")
        calls = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in self.client.info("commandstats").items()
        }
        return int(stats), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls

    def round_trips(self, run: Callable[[], None]) -> dict[str, float]:
        """Commands clients sent while `run()` ran, by command, from MONITOR (which tells them
        apart from the commands scripts ran inside Redis)."""
        seen: dict[str, int] = {}
        marker = f"bench-stop-{secrets.token_hex(4)}"

        def listen(ready: threading.Event) -> None:
            with redis.Redis.from_url(self.url).monitor() as monitor:
                ready.set()
                for entry in monitor.listen():
                    if marker in entry["command"]:
                        return
                    if entry.get("client_type") == "lua" or "monitor" in entry["command"].lower():
                        continue
                    name = entry["command"].split(" ", 1)[0].upper()
                    seen[name] = seen.get(name, 0) + 1

        ready = threading.Event()
        thread = threading.Thread(target=listen, args=(ready,))
        thread.start()
        ready.wait(5)
        time.sleep(0.2)
        run()
        self.client.echo(marker)
        thread.join(30)
        return seen

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


# --- 1. the store alone ------------------------------------------------------------------------


def full_plan() -> Plan:
    now = datetime.now(UTC)
    budgets = [
        BudgetCounter(
            f"{{{ORG}}}:b:bud_{scope}:-:0",
            f"bud_{scope}",
            BIG,
            True,
            0,
            SpendScope(ORG, scope, f"{scope}_1", None, None),
        )
        for scope in ("key", "member", "g3", "g2", "g1", "org")
    ]
    rates = [
        RateCounter(f"{{{ORG}}}:rl:{scope}:x:{kind}", BIG, kind == "tpm", scope, "x")
        for scope in ("key", "group")
        for kind in ("rpm", "tpm")
    ]
    credit = CreditCounter(f"{{{ORG}}}:credit", ORG)
    del now
    return Plan(ORG, "", 12_345, 900, (*budgets, *rates, credit), credit)


def next_plan(template: Plan) -> Plan:
    """A new request's plan; as in the gateway, plans of one key share their checks' memo."""
    return Plan(
        template.org_id,
        new_id("req"),
        template.amount,
        template.tokens,
        template.checks,
        template.credit,
        template.memo,
    )


async def seeds(counters: list, pending: list) -> list:  # type: ignore[type-arg]
    """The loader: every budget at 0, the credit at BIG (the usage stream's `pending` is empty)."""
    return [CreditSeed(BIG, BIG, 1) if isinstance(c, CreditCounter) else 0 for c in counters]


@dataclass
class StoreFigures:
    store: str
    concurrency: int
    requests: int
    wall_us: float
    client_cpu_us: float
    redis_cpu_us: float | None
    redis_ops: float | None  # commands Redis executed, those inside the scripts included


async def bench_store(
    name: str, store: GuardStore, requests: int, concurrency: int, redis_server: RedisProcess | None
) -> StoreFigures:
    template = full_plan()

    async def one() -> None:
        reserved = await store.reserve(next_plan(template), seeds)
        assert isinstance(reserved, Reserved)
        await store.settle(reserved, 10_000, 800)

    for _ in range(200):  # warm up: scripts loaded, counters seeded, connections open
        await one()
    per_worker = requests // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await one()

    before = redis_server.counts() if redis_server else None
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done = per_worker * concurrency
    figures = StoreFigures(name, concurrency, done, wall / done * 1e6, cpu / done * 1e6, None, None)
    if redis_server and before:
        after = redis_server.counts()
        figures.redis_ops = (after[0] - before[0]) / done
        figures.redis_cpu_us = (after[1] - before[1]) / done * 1e6
    return figures


async def sample_store(url: str, requests: int) -> None:
    client = connect_redis(url, pool_size=4)
    try:
        store = RedisGuardStore(client, "bench", SystemClock())
        template = full_plan()
        for _ in range(requests):
            reserved = await store.reserve(next_plan(template), seeds)
            assert isinstance(reserved, Reserved)
            await store.settle(reserved, 10_000, 800)
    finally:
        await client.aclose()


def per_request(seen: dict[str, int], requests: int) -> dict[str, float]:
    return {name: count / requests for name, count in sorted(seen.items())}


async def store_part(requests: int, redis_server: RedisProcess) -> list[StoreFigures]:
    results = []
    client = connect_redis(redis_server.url, pool_size=64)
    try:
        stores: list[tuple[str, GuardStore, RedisProcess | None]] = [
            ("redis", RedisGuardStore(client, "bench", SystemClock()), redis_server),
            ("in-process", MemoryGuardStore(SystemClock()), None),
        ]
        for concurrency in (1, 32):
            for name, store, server in stores:
                figures = await bench_store(name, store, requests, concurrency, server)
                print(f"  store {name} c={concurrency}: {figures.wall_us:.0f} us", file=sys.stderr)
                results.append(figures)
    finally:
        await client.aclose()
    return results


# --- 2. the gateway with and without guardrails ----------------------------------------------


async def make_keys(env: dict[str, str]) -> tuple[str, str]:
    """Migrate; an org with two keys in a three-level chain: one plain, one under every kind of
    guardrail (budgets at all six scopes, rpm/tpm at key and group, enforced credit)."""
    from sluicegate.core.db import make_engine
    from sluicegate.guard.models import Budget, Policy, PolicyBinding
    from sluicegate.identity.service import actor_for, ensure_user
    from sluicegate.keys.service import create_key
    from sluicegate.metering.ledger import LedgerEntry
    from sluicegate.migrate import upgrade
    from sluicegate.orgs.group_service import create_group
    from sluicegate.orgs.service import create_organization
    from sluicegate.runtime import Runtime
    from sluicegate.settings import Settings

    names = ("database_url", "redis_url", "redis_prefix", "secret_key")
    settings = Settings(_env_file=None, **{n: env[f"SLUICEGATE_{n.upper()}"] for n in names})
    engine = make_engine(settings.resolved_database_url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    runtime = Runtime.build(settings)
    try:
        async with runtime.unit_of_work() as session:
            owner, _ = await ensure_user(session, "bench@example.com")
            actor = actor_for(owner)
            org = await create_organization(session, actor, name="Bench")
            org.credit_enforced = True
            groups = []
            for name in ("division", "team", "project"):
                parent = groups[-1].id if groups else None
                groups.append(
                    await create_group(session, actor, org.id, name=name, parent_id=parent)
                )
            secrets_ = []
            for label in ("plain", "governed"):
                group = groups[-1] if label == "governed" else groups[0]
                key, secret = await create_key(
                    session,
                    actor,
                    org.id,
                    pepper=settings.secret,
                    name=label,
                    group_id=group.id,
                    now=runtime.clock.now(),
                )
                secrets_.append((key, secret))
            governed = secrets_[1][0]
            scopes = [("key", governed.id), ("member", owner.id), ("org", org.id)]
            scopes += [("group", g.id) for g in groups]
            for scope_type, scope_id in scopes:
                session.add(
                    Budget(
                        id=new_id("bud"),
                        org_id=org.id,
                        scope_type=scope_type,
                        scope_id=scope_id,
                        period="month",
                        limit_nusd=BIG,
                        enforcement="hard",
                        thresholds=[],
                    )
                )
            policy = Policy(id=new_id("pol"), org_id=org.id, name="limits", rpm=10**9, tpm=10**12)
            session.add(policy)
            await session.flush()
            for target_type, target_id in (("key", governed.id), ("group", groups[1].id)):
                session.add(
                    PolicyBinding(
                        id=new_id("pb"),
                        org_id=org.id,
                        policy_id=policy.id,
                        target_type=target_type,
                        target_id=target_id,
                    )
                )
            session.add(LedgerEntry(id=new_id("led"), org_id=org.id, kind="topup", amount_nusd=BIG))
            # The plain key's org enforces credit too: give it its own org without any rule.
            plain_org = await create_organization(session, actor, name="Plain")
            plain_group = await create_group(session, actor, plain_org.id, name="plain")
            _k, plain = await create_key(
                session,
                actor,
                plain_org.id,
                pepper=settings.secret,
                name="plain",
                group_id=plain_group.id,
                now=runtime.clock.now(),
            )
    finally:
        await runtime.close()
    return plain, secrets_[1][1]


@dataclass
class GatewayFigures:
    key: str
    concurrency: int
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p90: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    redis_ops: list[float] = field(default_factory=list)
    errors: int = 0


def gateway_part(
    gateway: Server, keys: dict[str, str], redis_server: RedisProcess, duration: float, rounds: int
) -> list[GatewayFigures]:
    figures = {(name, c): GatewayFigures(name, c) for c in (1, 32) for name in keys}
    url = f"{gateway.base_url}/v1/chat/completions"
    with asyncio.Runner() as runner:
        for _ in range(rounds):
            for concurrency in (1, 32):
                for name, key in keys.items():  # A B, A B: drift hits both alike
                    result = Result("chat", concurrency, name, duration)
                    cpu = gateway.cpu_seconds()
                    commands = redis_server.counts()[0]
                    runner.run(drive(result, url, key, False, 1.0))
                    entry = figures[(name, concurrency)]
                    entry.cpu_ms.append((gateway.cpu_seconds() - cpu) * 1000 / result.completed)
                    entry.redis_ops.append(
                        (redis_server.counts()[0] - commands - 3) / result.completed
                    )
                    cuts = percentiles(result.latencies_ms)
                    entry.rps.append(result.rps)
                    entry.p50.append(cuts["p50"])
                    entry.p90.append(cuts["p90"])
                    entry.p99.append(cuts["p99"])
                    entry.errors += sum(result.errors.values())
                    print(
                        f"  gateway {name} c={concurrency}: {result.rps:.0f} req/s", file=sys.stderr
                    )
    return list(figures.values())


def sample_gateway(gateway: Server, key: str, requests: int) -> None:
    import httpx

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        for _ in range(requests):
            response = client.post(
                "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
            )
            response.raise_for_status()
    time.sleep(0.5)  # settlements run just after the responses


# --- report --------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def markdown(
    stores: list[StoreFigures], gateways: list[GatewayFigures], trips: dict[str, dict[str, float]]
) -> str:
    lines = [
        "### Round trips to Redis per request (commands clients sent, from MONITOR)",
        "",
        "| what | per request |",
        "| --- | --- |",
    ]
    for what, counts in trips.items():
        shown = ", ".join(f"{name} {count:.2f}" for name, count in counts.items()) or "none"
        lines.append(f"| {what} | {shown} (total {sum(counts.values()):.2f}) |")
    lines += [
        "",
        "### The counter store alone: one reserve + one settle",
        "",
        "| store | concurrency | wall us/request | client CPU us/request | Redis CPU us/request "
        "| commands Redis ran/request (scripts' included) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in stores:

        def opt(value: float | None, digits: int = 1) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        lines.append(
            f"| {s.store} | {s.concurrency} | {s.wall_us:.0f} | {s.client_cpu_us:.0f} | "
            f"{opt(s.redis_cpu_us, 0)} | {opt(s.redis_ops, 1)} |"
        )
    lines += [
        "",
        "### The gateway: a key without guardrails vs one under all of them",
        "",
        "Medians over the rounds (min-max in brackets).",
        "",
        "| key | concurrency | req/s | p50 ms | p90 ms | p99 ms | gateway CPU ms/request "
        "| commands Redis ran/request | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g in gateways:

        def spread(values: list[float], digits: int = 2) -> str:
            return f"{med(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

        lines.append(
            f"| {g.key} | {g.concurrency} | {spread(g.rps, 0)} | {spread(g.p50)} | "
            f"{spread(g.p90)} | {spread(g.p99)} | {spread(g.cpu_ms, 3)} | "
            f"{med(g.redis_ops):.1f} | {g.errors} |"
        )
    by = {(g.key, g.concurrency): g for g in gateways}
    lines += ["", "Added by the guardrails (governed minus plain, medians):", ""]
    for c in (1, 32):
        plain, governed = by[("plain", c)], by[("governed", c)]
        lines.append(
            f"- concurrency {c}: p50 {med(governed.p50) - med(plain.p50):+.3f} ms, gateway CPU "
            f"{med(governed.cpu_ms) - med(plain.cpu_ms):+.3f} ms/request, throughput "
            f"x{med(governed.rps) / med(plain.rps):.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sg-guard-bench-"))
    redis_server = RedisProcess(tmp)
    database = f"sluicegate_bench_{secrets.token_hex(4)}"
    servers: list[Server] = []
    try:
        stores = asyncio.run(store_part(args.requests, redis_server))
        trips = {
            "counter store: reserve + settle": per_request(
                redis_server.round_trips(lambda: asyncio.run(sample_store(redis_server.url, 200))),
                200,
            )
        }
        asyncio.run(create_database(database))
        env = {
            "SLUICEGATE_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            "SLUICEGATE_REDIS_URL": redis_server.url,
            "SLUICEGATE_REDIS_PREFIX": "bench",
            "SLUICEGATE_SECRET_KEY": secrets.token_urlsafe(48),
            "SLUICEGATE_LOG_LEVEL": "warning",
        }
        mock = start_server("mock", ["sluicegate.mockupstream"], {}, tmp)
        servers.append(mock)
        providers = tmp / "providers.yaml"
        providers.write_text(
            "providers:\n  - name: mock\n    type: openai\n"
            f"    base_url: {mock.base_url}/v1\n    api_key: bench\n"
            "models:\n  - id: gpt-4o-mini\n    provider: mock\n"
        )
        env["SLUICEGATE_PROVIDERS"] = str(providers)
        plain, governed = asyncio.run(make_keys(env))
        gateway = start_server("gateway", ["sluicegate", "serve"], env, tmp)
        servers.append(gateway)
        gateways = gateway_part(
            gateway,
            {"plain": plain, "governed": governed},
            redis_server,
            args.duration,
            args.rounds,
        )
        print(
            f"Machine: {platform.processor() or platform.machine()}, Python "
            f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}\n"
        )
        for name, key in (("plain", plain), ("governed", governed)):
            trips[f"gateway, {name} key"] = per_request(
                redis_server.round_trips(lambda key=key: sample_gateway(gateway, key, 200)), 200
            )
        print(markdown(stores, gateways, trips))
        if args.output:
            args.output.write_text(
                json.dumps(
                    {
                        "stores": [asdict(s) for s in stores],
                        "gateways": [asdict(g) for g in gateways],
                        "round_trips": trips,
                    },
                    indent=2,
                )
            )
    finally:
        for server in reversed(servers):
            server.stop()
        redis_server.stop()
        asyncio.run(drop_stores(database, "bench"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
