"""The chaos harness: steady governed traffic on a two-worker gateway, a separate usage worker,
Redis and Postgres that can be broken (tests/faults/servers.py), and the books checked after
each fault. Used by tests/faults/test_chaos.py (short phases) and bench/chaos.py (long ones).

After every phase, once the traffic has stopped and the usage is drained:
- every call a client saw succeed has exactly one usage row (a row no client saw succeed
  belongs to a call that failed or whose connection was cut);
- the key under a hard budget never spent more than its limit;
- reconcile (`sluicegate reconcile`'s own function) finds everything derived from the usage
  rows in agreement with them (the ledger, every rollup, the counters in Redis).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text

from sluicegate.metering.stream import DRAIN_GROUP, stream_key
from sluicegate.reconciliation import reconcile
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter, make_settings, settings_env
from tests.factories import Tenant, make_tenant, put_tenant_budget
from tests.faults.servers import RedisServer, TcpProxy
from tests.proxy.conftest import MOCK_KEY_ENV
from tests.support import ServerProcess, free_port, start_process

# "abcd" with max_tokens 16: the reservation is the cost (see tests/faults/conftest.py).
COST = 8 * 150 + 16 * 600
SETTLED_WITHIN_SECONDS = 45.0


@dataclass
class Outcome:
    attempted: set[str] = field(default_factory=set)
    succeeded: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)  # sent, then the connection broke
    statuses: Counter[int] = field(default_factory=Counter)


@dataclass
class Traffic:
    """Clients calling with their own request ids (x-request-id) and recording what they saw.
    Every third call streams; while `failing` is set, every fourth asks a model whose upstream
    answers 500."""

    base_url: str
    keys: list[str]
    clients: int = 4
    pause: float = 0.02
    failing: bool = False
    outcome: Outcome = field(default_factory=Outcome)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self, number: int) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            sequence = 0
            while not self._stop.is_set():
                sequence += 1
                request_id = f"chaos-{number}-{sequence}-{secrets.token_hex(4)}"
                key = self.keys[sequence % len(self.keys)]
                self.outcome.attempted.add(request_id)
                try:
                    status = await self._call(http, request_id, key, sequence)
                    self.outcome.statuses[status] += 1
                    if status == 200:
                        self.outcome.succeeded.add(request_id)
                except httpx.ConnectError:
                    self.outcome.attempted.discard(request_id)  # nothing was sent
                    await asyncio.sleep(0.1)
                except httpx.TransportError:
                    self.outcome.cut.add(request_id)
                await asyncio.sleep(self.pause)

    async def _call(self, http: httpx.AsyncClient, request_id: str, key: str, n: int) -> int:
        # Odd calls go to the soft-budget key: the failing ones reach the upstream even once the
        # hard budget is spent.
        model = "mock-error-500" if self.failing and n % 4 == 1 else "gpt-4o-mini"
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "abcd"}],
            "max_tokens": 16,
            "stream": n % 3 == 0,
        }
        headers = {"authorization": f"Bearer {key}", "x-request-id": request_id}
        url = self.base_url + "/v1/chat/completions"
        if not body["stream"]:
            answer = await http.post(url, json=body, headers=headers)
            if answer.status_code == 200 and "usage" not in orjson.loads(answer.content):
                return -1
            return answer.status_code
        async with http.stream("POST", url, json=body, headers=headers) as answer:
            content = (await answer.aread()).decode()
            if answer.status_code == 200 and not content.rstrip().endswith("data: [DONE]"):
                return -1  # an error event in a stream that had started
            return answer.status_code


@dataclass
class Stage:
    """Everything a chaos run owns: its Redis, the TCP proxy in front of Postgres, the gateway
    (two workers), the usage worker, and two keys (one under a hard budget, one under a soft
    budget), each of its own org."""

    tmp_path: Path
    postgres_url: str
    providers: Path
    hard_limit_calls: int
    redis: RedisServer = field(init=False)
    proxy: TcpProxy = field(init=False)
    runtime: Runtime = field(init=False)
    starter: GatewayStarter = field(init=False)
    gateway: ServerProcess | None = None
    worker: ServerProcess | None = None
    hard: Tenant | None = None
    soft: Tenant | None = None
    mode: str = "closed"
    log: list[str] = field(default_factory=list)

    async def open(self) -> None:
        self.redis = RedisServer(self.tmp_path, persistent=True)
        self.redis.start()
        self.proxy = TcpProxy("127.0.0.1", 5432).start()
        self.runtime = Runtime.build(self.direct)
        await self.runtime.start()
        self.starter = GatewayStarter(self.tmp_path, [])
        self.hard = await self._tenant(self.hard_limit_calls * COST, "hard")
        self.soft = await self._tenant(10 * COST, "soft")

    async def close(self) -> None:
        for server in (self.gateway, self.worker):
            if server is not None:
                server.stop()
        await self.runtime.close()
        self.proxy.close()
        self.redis.stop()

    @property
    def direct(self) -> Settings:
        return make_settings(
            database_url=self.postgres_url, redis_url=self.redis.url, redis_prefix="sg"
        )

    def env(self) -> dict[str, str]:
        database = self.postgres_url.rsplit("/", 1)[1]
        through_proxy = self.postgres_url.replace(
            f"5432/{database}", f"{self.proxy.port}/{database}"
        )
        return {
            **settings_env(self.direct),
            **MOCK_KEY_ENV,
            "SLUICEGATE_DATABASE_URL": through_proxy,
            "SLUICEGATE_PROVIDERS": str(self.providers),
            "SLUICEGATE_RUN_WORKER": "false",
            "SLUICEGATE_MIGRATE_ON_START": "false",
            "SLUICEGATE_USAGE_CLAIM_IDLE_SECONDS": "1",
            "SLUICEGATE_GUARD_FAILURE_MODE": self.mode,
            "SLUICEGATE_DATABASE_CONNECT_TIMEOUT": "2",
            "SLUICEGATE_DATABASE_POOL_TIMEOUT": "2",
            "SLUICEGATE_DATABASE_STATEMENT_TIMEOUT": "3",
        }

    async def _tenant(self, limit: int, enforcement: str) -> Tenant:
        tenant = await make_tenant(self.runtime)
        await put_tenant_budget(self.runtime, tenant, limit, period="day", enforcement=enforcement)
        return tenant

    def start_gateway(self) -> ServerProcess:
        if self.gateway is not None:
            self.gateway.stop()
        self.gateway = self.starter(env=self.env(), args=("--workers", "2"))
        return self.gateway

    def start_worker(self) -> ServerProcess:
        port = free_port()
        self.worker = start_process(
            ["sluicegate", "worker", "--metrics-port", str(port)],
            port=port,
            log_path=self.tmp_path / f"worker-{port}.log",
            ready_path="/metrics",
            env=self.env(),
            cwd=self.tmp_path,
        )
        return self.worker

    # --- faults -------------------------------------------------------------------------------

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.process.kill()
        self.worker.process.wait()

    def kill_a_gateway_worker(self) -> None:
        """SIGKILL one of uvicorn's worker processes; uvicorn starts another."""
        assert self.gateway is not None
        children = subprocess.run(
            ["pgrep", "-P", str(self.gateway.process.pid), "-f", "multiprocessing.spawn"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert children, "the gateway has no worker processes"
        os.kill(int(children[0]), signal.SIGKILL)

    # --- after each phase ---------------------------------------------------------------------

    async def settled(self, traffic: Traffic) -> None:
        """Wait until every org stream is drained and every call a client saw succeed is
        stored (the writer's direct path, used while Redis was away, included)."""
        assert self.hard is not None and self.soft is not None
        client = self.redis.client()
        deadline = time.monotonic() + SETTLED_WITHIN_SECONDS
        try:
            while True:
                backlog = 0
                for tenant in (self.hard, self.soft):
                    stream = stream_key("sg", tenant.org_id)
                    if client.exists(stream):
                        backlog += client.xlen(stream)
                        backlog += client.xpending(stream, DRAIN_GROUP)["pending"]
                stored = await self.request_ids()
                if (backlog == 0 and traffic.outcome.succeeded <= stored) or (
                    time.monotonic() > deadline
                ):
                    return
                await asyncio.sleep(0.2)
        finally:
            client.close()

    async def request_ids(self) -> set[str]:
        assert self.hard is not None and self.soft is not None
        async with self.runtime.sessions() as session:
            rows = await session.execute(
                text("SELECT request_id FROM usage_events WHERE org_id IN (:a, :b)"),
                {"a": self.hard.org_id, "b": self.soft.org_id},
            )
            return {row[0] for row in rows}

    async def check(self, phase: str, traffic: Traffic) -> dict[str, Any]:
        """The invariants after a phase; returns its figures."""
        assert self.hard is not None and self.soft is not None
        await self.settled(traffic)
        outcome = traffic.outcome
        async with self.runtime.sessions() as session:
            duplicates = (
                await session.execute(
                    text(
                        "SELECT request_id FROM usage_events WHERE org_id IN (:a, :b) "
                        "GROUP BY request_id HAVING count(*) > 1"
                    ),
                    {"a": self.hard.org_id, "b": self.soft.org_id},
                )
            ).all()
            spent = await session.scalar(
                text("SELECT coalesce(sum(cost_nusd), 0) FROM usage_events WHERE key_id = :k"),
                {"k": self.hard.key_id},
            )
        stored = await self.request_ids()
        lost = outcome.succeeded - stored
        assert not lost, f"{phase}: {len(lost)} calls a client saw succeed have no usage row"
        assert not duplicates, f"{phase}: calls with more than one usage row: {duplicates[:5]}"
        unknown = stored - outcome.attempted
        assert not unknown, f"{phase}: usage rows of calls nobody made: {sorted(unknown)[:5]}"
        limit = self.hard_limit_calls * COST
        assert int(spent) <= limit, f"{phase}: {spent} spent under a hard budget of {limit}"
        await self.reconciled(phase)
        return {"hard_spent_calls": int(spent) // COST}

    async def reconciled(self, phase: str) -> None:
        """The books agree, counters included. What a gateway charged failing open reaches the
        shared counters from its heartbeat once the writer stored the events (guard/failopen.py):
        a request admitted before Redis came back and settled after the last recovery is folded
        in a beat later. So a mismatch must last SETTLED_WITHIN_SECONDS to fail."""
        assert self.hard is not None and self.soft is not None
        deadline = time.monotonic() + SETTLED_WITHIN_SECONDS
        while True:
            report: list[str] = []
            mismatches = [
                await reconcile(self.runtime, tenant.org_id, None, False, report.append)
                for tenant in (self.hard, self.soft)
            ]
            if all(m is None for m in mismatches):
                return
            assert time.monotonic() < deadline, f"{phase}: reconcile: " + "\n".join(report)
            await asyncio.sleep(0.5)


Fault = Callable[[], object]


async def run_phase(
    stage: Stage,
    traffic: Traffic,
    name: str,
    fault: Fault | None,
    heal: Fault | None,
    *,
    before: float,
    during: float,
    after: float,
) -> dict[str, Any]:
    """Traffic, the fault, traffic through it, the heal, traffic again; then the checks (over
    everything sent so far). Returns the phase's figures."""
    calls, succeeded, cut = (
        len(traffic.outcome.attempted),
        len(traffic.outcome.succeeded),
        len(traffic.outcome.cut),
    )
    statuses = Counter(traffic.outcome.statuses)
    traffic.start()
    try:
        await asyncio.sleep(before)
        for step in (fault, heal):
            if step is not None:
                # Off the event loop: starting a process or a server blocks, the clients don't.
                await asyncio.to_thread(step)
            await asyncio.sleep(during if step is fault else after)
    finally:
        await traffic.stop()
    checked = await stage.check(name, traffic)
    figures = {
        "phase": name,
        "calls": len(traffic.outcome.attempted) - calls,
        "succeeded": len(traffic.outcome.succeeded) - succeeded,
        "cut": len(traffic.outcome.cut) - cut,
        "statuses": dict(sorted((traffic.outcome.statuses - statuses).items())),
        **checked,
    }
    stage.log.append(str(figures))
    return figures
