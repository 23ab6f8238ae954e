"""SIGKILL of the gateway and of the usage worker in the middle of load, on Postgres and Redis:
afterwards every request a client saw succeed has its usage row, no row is counted twice (in
the rollups or the ledger), and the only rows no client saw succeed belong to requests whose
connection the kill cut (settled, then the answer lost with the process)."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from sluicegate.metering.stream import DRAIN_GROUP, stream_key
from sluicegate.runtime import Runtime
from tests.conftest import GatewayStarter, make_settings, settings_env
from tests.factories import make_tenant
from tests.metering.books import read_books
from tests.proxy.conftest import MOCK_KEY_ENV
from tests.support import ServerProcess, free_port, start_process

CLIENTS = 8
DRAIN_TIMEOUT_SECONDS = 30.0


@dataclass
class Load:
    base_url: str
    key: str
    attempted: set[str] = field(default_factory=set)
    succeeded: set[str] = field(default_factory=set)
    cut: set[str] = field(default_factory=set)  # sent, then the connection broke
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, number: int) -> None:
        async with httpx.AsyncClient(timeout=15) as http:
            sequence = 0
            while not self.stop.is_set():
                sequence += 1
                request_id = f"kill-{number}-{sequence}-{secrets.token_hex(3)}"
                stream = sequence % 3 == 0
                self.attempted.add(request_id)
                try:
                    if await self._call(http, request_id, stream):
                        self.succeeded.add(request_id)
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)  # the gateway is down: nothing was sent
                except httpx.TransportError:
                    self.cut.add(request_id)

    async def _call(self, http: httpx.AsyncClient, request_id: str, stream: bool) -> bool:
        body: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"hello {request_id}"}],
            "stream": stream,
        }
        headers = {"authorization": f"Bearer {self.key}", "x-request-id": request_id}
        url = self.base_url + "/v1/chat/completions"
        if not stream:
            response = await http.post(url, json=body, headers=headers)
            return response.status_code == 200 and "usage" in orjson.loads(response.content)
        async with http.stream("POST", url, json=body, headers=headers) as response:
            text = (await response.aread()).decode()
            return response.status_code == 200 and text.rstrip().endswith("data: [DONE]")


def start_worker(env: dict[str, str], tmp_path: Path) -> ServerProcess:
    port = free_port()
    return start_process(
        ["sluicegate", "worker", "--metrics-port", str(port)],
        port=port,
        log_path=tmp_path / f"worker-{port}.log",
        ready_path="/metrics",
        env=env,
        cwd=tmp_path,
    )


def kill(server: ServerProcess) -> None:
    server.process.kill()
    server.process.wait()


async def test_sigkill_of_gateway_and_worker_loses_no_settled_request_and_doubles_none(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    providers_file: Path,
    tmp_path: Path,
) -> None:
    prefix = f"{redis_prefix}:kill{secrets.token_hex(4)}"
    settings = make_settings(database_url=postgres_url, redis_url=redis_url, redis_prefix=prefix)
    runtime = Runtime.build(settings)
    await runtime.start()
    starter = GatewayStarter(tmp_path, [])
    worker: ServerProcess | None = None
    try:
        tenant = await make_tenant(runtime)
        env = {
            **settings_env(settings),
            **MOCK_KEY_ENV,
            "SLUICEGATE_PROVIDERS": str(providers_file),
            # Only the worker drains, so killing it leaves entries delivered and unacknowledged.
            "SLUICEGATE_RUN_WORKER": "false",
            "SLUICEGATE_USAGE_CLAIM_IDLE_SECONDS": "1",
        }
        gateway = starter(env=env)
        worker = start_worker(env, tmp_path)
        load = Load(gateway.base_url, tenant.key)
        clients = [asyncio.create_task(load.client(n)) for n in range(CLIENTS)]

        await asyncio.sleep(1.5)
        kill(worker)
        await asyncio.sleep(0.5)
        worker = await asyncio.to_thread(start_worker, env, tmp_path)
        await asyncio.sleep(1.0)
        kill(gateway)
        gateway = await asyncio.to_thread(starter, env=env)
        load.base_url = gateway.base_url
        await asyncio.sleep(1.5)
        kill(worker)
        worker = await asyncio.to_thread(start_worker, env, tmp_path)
        await asyncio.sleep(1.0)
        load.stop.set()
        await asyncio.gather(*clients)

        assert runtime.redis is not None
        stream = stream_key(prefix, tenant.org_id)
        deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
        while True:
            length = await runtime.redis.xlen(stream)
            pending = (await runtime.redis.xpending(stream, DRAIN_GROUP))["pending"]
            if (length, pending) == (0, 0) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (length, pending) == (0, 0), f"the worker left the stream undrained:\n{worker.log()}"
        metrics = await asyncio.to_thread(httpx.get, worker.base_url + "/metrics")
        samples = dict(
            line.rsplit(" ", 1)
            for line in metrics.text.splitlines()
            if line.startswith("sluicegate_usage")
        )
        assert float(samples["sluicegate_usage_events_drained_total"]) > 0
        assert "sluicegate_usage_drain_lag_seconds" in samples
        assert "sluicegate_usage_stream_backlog" in samples

        async with runtime.sessions() as session:
            books = await read_books(session, tenant.org_id)
        assert len(load.succeeded) >= 100, "too little load to prove anything"
        assert load.succeeded <= books.request_ids, "a request a client saw succeed was lost"
        assert books.request_ids - load.succeeded <= load.cut, "a row of an unknown request"
        books.assert_consistent()
    finally:
        if worker is not None:
            worker.stop()
        for server in starter.started:
            server.stop()
        await runtime.close()
