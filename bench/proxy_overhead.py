"""Added latency of the gateway over calling the mock upstream directly.

Starts the mock upstream and `sluicegate serve` (Postgres + Redis, or SQLite + in-process
counters with --embedded) as subprocesses on free loopback ports, creates a tenant and an API key,
drives both with the same closed-loop httpx client from this process, and prints Markdown tables.
The database, Redis keys, temporary files and processes it made are removed on exit, also on
Ctrl-C or failure. Linux only (CPU time is read from /proc).

    python bench/proxy_overhead.py [--duration 10] [--warmup 2] [--concurrency 1,64]
        [--workers 1] [--embedded] [--output results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "gpt-4o-mini"
# The body of bench/wrk/chat.lua, so the figures compare with bench/mock_upstream.sh.
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello to the world in one short sentence."},
]
STARTUP_TIMEOUT_SECONDS = 60.0
# Far above any healthy latency here; a request that slow is a failure worth seeing as one.
REQUEST_TIMEOUT_SECONDS = 30.0
PERCENTILES = (50, 90, 99)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_OF = ("client", "mock", "gateway")  # the processes whose CPU time each scenario reports


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server and its live descendants (uvicorn workers)."""
        return tree_cpu(self.process.pid)


@dataclass
class Result:
    scenario: str
    concurrency: int
    target: str
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    completed: int = 0  # warm-up included, to share out the CPU time measured over both
    cpu_ms_per_request: dict[str, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.seconds


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {f"p{p}": values[0] if values else float("nan") for p in PERCENTILES}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {f"p{p}": cuts[p - 1] for p in PERCENTILES}


# --- the servers and their data ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """A process and its live descendants."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # exited meanwhile
    return found


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    total = 0.0
    for member in tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += (int(stat[11]) + int(stat[12])) / CLOCK_TICKS  # utime, stime
    return total


def launch(
    name: str,
    argv: list[str],
    env: dict[str, str],
    tmp: Path,
    port: int,
    ready: str,
    *,
    startup_seconds: float = STARTUP_TIMEOUT_SECONDS,
) -> Server:
    """Start argv (the environment without our SLUICEGATE_* variables, plus env) and wait until
    GET ready on its port answers 200."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEGATE_")}
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp / f"{name}.log"
    with log_path.open("wb") as log:
        # Own session: a Ctrl-C in the terminal reaches only us, and we stop the servers in order.
        process = subprocess.Popen(  # noqa: S603 - our own command lines
            argv,
            env=environment | env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(name, process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.TransportError):  # not listening yet
            if httpx.get(server.base_url + ready, timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer {ready}:\n{server.log_tail()}")


def start_server(name: str, module: list[str], env: dict[str, str], tmp: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", *module, "--port", str(port)]
    return launch(name, argv, env, tmp, port, "/health" if name == "mock" else "/healthz")


async def create_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_stores(database: str, prefix: str) -> None:
    """Drop the database (closing the connections left to it) and the Redis keys under prefix."""
    import asyncpg

    try:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()
    finally:
        await drop_keys(prefix)


async def drop_keys(prefix: str) -> None:
    """Delete the Redis keys under prefix."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def create_tenant_key(env: dict[str, str]) -> str:
    """Migrate the gateway's database, create an org, a group and an API key; return the key."""
    from sluicegate.core.db import make_engine
    from sluicegate.identity.service import actor_for, ensure_user
    from sluicegate.keys.service import create_key
    from sluicegate.migrate import upgrade
    from sluicegate.orgs.group_service import create_group
    from sluicegate.orgs.service import create_organization
    from sluicegate.runtime import Runtime
    from sluicegate.settings import Settings

    names = ("database_url", "database_path", "redis_url", "redis_prefix", "secret_key")
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
            group = await create_group(session, actor, org.id, name="bench")
            _key, secret = await create_key(
                session,
                actor,
                org.id,
                pepper=settings.secret,
                name="bench",
                group_id=group.id,
                now=runtime.clock.now(),
            )
    finally:
        await runtime.close()
    return str(secret)


# --- the load generator ------------------------------------------------------------------------


async def drive(result: Result, url: str, key: str, stream: bool, warmup: float) -> None:
    """Closed loop: `concurrency` workers send back to back; only requests started after the
    warm-up and before its end are kept. Latency runs from send to the last byte of the body."""
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": stream}).encode()
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    # One client (one keep-alive connection) per worker: httpcore's pool scans every connection
    # on each request, so one shared 64-connection pool made the client itself the bottleneck.
    # Built before the clock starts; one TLS context for all, as each takes ~40 ms to load.
    tls = ssl.create_default_context()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(
            limits=limits, timeout=REQUEST_TIMEOUT_SECONDS, trust_env=False, verify=tls
        )
        for _ in range(result.concurrency)
    ]
    measure_from = time.perf_counter() + warmup
    measure_until = measure_from + result.seconds

    async def send(client: httpx.AsyncClient) -> tuple[str | None, float | None]:
        """The error (None when fine) and, for a stream, when its first bytes came."""
        if not stream:
            response = await client.post(url, content=body, headers=headers)
            return (None if response.status_code == 200 else str(response.status_code)), None
        first, last = None, b""
        async with client.stream("POST", url, content=body, headers=headers) as response:
            async for chunk in response.aiter_raw():
                first = first or time.perf_counter()
                last = chunk or last
        if response.status_code != 200:
            return str(response.status_code), first
        # A relayed upstream failure arrives as an SSE error event inside a 200.
        return (None if b"[DONE]" in last else "stream without [DONE]"), first

    async def worker(client: httpx.AsyncClient) -> None:
        while (start := time.perf_counter()) < measure_until:
            try:
                error, first = await send(client)
            except httpx.HTTPError as exc:
                error, first = type(exc).__name__, None
            result.completed += 1
            if start < measure_from:
                continue
            if error is not None:
                result.errors[error] += 1
                continue
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
            if first is not None:
                result.ttfb_ms.append((first - start) * 1000)

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


def run_scenarios(
    args: argparse.Namespace, mock: Server, gateway: Server, key: str
) -> list[Result]:
    try:
        import uvloop  # the client's own CPU cost is in every number; keep it low

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    results = []
    with runner:
        for scenario, stream in (("chat", False), ("chat stream", True)):
            for concurrency in args.concurrency:
                # Direct and gateway back to back, so slow drift of the machine hits both alike.
                for target, server, token in (("direct", mock, "mock"), ("gateway", gateway, key)):
                    result = Result(scenario, concurrency, target, args.duration)
                    before = (time.process_time(), mock.cpu_seconds(), gateway.cpu_seconds())
                    url = f"{server.base_url}/v1/chat/completions"
                    runner.run(drive(result, url, token, stream, args.warmup))
                    after = (time.process_time(), mock.cpu_seconds(), gateway.cpu_seconds())
                    result.cpu_ms_per_request = {
                        name: (end - start) * 1000 / max(result.completed, 1)
                        for name, start, end in zip(CPU_OF, before, after, strict=True)
                    }
                    errors = sum(result.errors.values())
                    print(f"  {scenario} c={concurrency} {target}: {result.rps:.0f} req/s, "
                          f"{errors} errors", file=sys.stderr)  # fmt: skip
                    results.append(result)
    return results


# --- the report --------------------------------------------------------------------------------


def markdown(results: list[Result]) -> str:
    lines = [
        "| scenario | c | target | req/s | p50 ms | p90 ms | p99 ms | TTFB p50 ms "
        "| CPU ms/req client / mock / gateway | errors |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lat = percentiles(r.latencies_ms)
        ttfb = f"{percentiles(r.ttfb_ms)['p50']:.2f}" if r.ttfb_ms else "-"
        cpu = " / ".join(f"{r.cpu_ms_per_request[name]:.2f}" for name in CPU_OF)
        lines.append(
            f"| {r.scenario} | {r.concurrency} | {r.target} | {r.rps:,.0f} | {lat['p50']:.2f} "
            f"| {lat['p90']:.2f} | {lat['p99']:.2f} | {ttfb} | {cpu} | {sum(r.errors.values())} |"
        )
    lines += [
        "",
        "| scenario | c | added p50 ms | added p99 ms | p50 ratio | p99 ratio | req/s ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for direct, gateway in zip(results[::2], results[1::2], strict=True):
        d, g = percentiles(direct.latencies_ms), percentiles(gateway.latencies_ms)
        lines.append(
            f"| {direct.scenario} | {direct.concurrency} | {g['p50'] - d['p50']:.2f} "
            f"| {g['p99'] - d['p99']:.2f} | {g['p50'] / d['p50']:.2f}x "
            f"| {g['p99'] / d['p99']:.2f}x | {gateway.rps / direct.rps:.2f}x |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated worker counts")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument(
        "--embedded", action="store_true", help="gateway on SQLite + in-process counters"
    )
    parser.add_argument("--output", type=Path, help="write the raw numbers to this JSON file")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` cleans up like Ctrl-C
    run_id = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="sluicegate-bench-"))
    database = None if args.embedded else f"sluicegate_bench_{run_id}"
    prefix = f"sgbench_{run_id}"
    env = {
        "SLUICEGATE_SECRET_KEY": secrets.token_urlsafe(48),
        "SLUICEGATE_PROVIDERS": str(tmp / "providers.yaml"),
        "SLUICEGATE_WORKERS": str(args.workers),
        "SLUICEGATE_LOG_LEVEL": "warning",
        "SLUICEGATE_REDIS_PREFIX": prefix,
        "SLUICEGATE_DATABASE_PATH": str(tmp / "bench.db"),
        "SLUICEGATE_DATABASE_URL": "",  # empty means unset: embedded SQLite
        "SLUICEGATE_REDIS_URL": "",
    }
    if database is not None:
        env["SLUICEGATE_DATABASE_URL"] = f"postgresql+asyncpg://postgres@127.0.0.1/{database}"
        env["SLUICEGATE_REDIS_URL"] = REDIS_URL
    servers: list[Server] = []
    try:
        servers.append(mock := start_server("mock", ["sluicegate.mockupstream"], {}, tmp))
        Path(env["SLUICEGATE_PROVIDERS"]).write_text(
            f"providers:\n  - name: mock\n    type: openai\n"
            f"    base_url: {mock.base_url}/v1\n    api_key: anything\n"
            f"models:\n  - id: {MODEL}\n    provider: mock\n"
        )
        if database is not None:
            asyncio.run(create_database(database))
        key = asyncio.run(create_tenant_key(env))
        servers.append(gateway := start_server("gateway", ["sluicegate", "serve"], env, tmp))
        mode = "SQLite + in-process counters" if args.embedded else "Postgres + Redis"
        load = {"before": os.getloadavg()[0]}
        print(f"gateway on {mode}, {args.workers} worker(s)", file=sys.stderr)
        results = run_scenarios(args, mock, gateway, key)
        load["after"] = os.getloadavg()[0]
        print(f"load average (1 min) before {load['before']:.2f}, after {load['after']:.2f}\n")
        print(markdown(results))
        for server in servers:
            if server.process.poll() is not None:
                print(f"warning: {server.name} exited:\n{server.log_tail()}", file=sys.stderr)
        if args.output is not None:
            report = {
                "config": {k: v for k, v in vars(args).items() if k != "output"},
                "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
                "load_average": load,
                "results": [
                    asdict(r) | {"rps": r.rps, "latency": percentiles(r.latencies_ms)}
                    for r in results
                ],
            }
            args.output.write_text(json.dumps(report, indent=1))
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if database is not None:
            asyncio.run(drop_stores(database, prefix))


if __name__ == "__main__":
    raise SystemExit(main())
