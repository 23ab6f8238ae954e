"""Sluicegate side by side with LiteLLM's proxy and the floor, on one mock upstream, in one run.

Starts on loopback: the mock upstream (also called directly: "direct"), the floor
(`bench/floor.py`: uvicorn and one shared httpx client, no auth, no accounting), Sluicegate on
Postgres + Redis with one and with two uvicorn workers (one API key under every guardrail:
budgets at key, member, three groups and org, rpm/tpm at key and group, the org's credit
enforced) and LiteLLM's proxy from its own virtual environment (master key, models from its
config file, no database, Redis for its usage-based routing limits). Then, in rounds, each
target in turn (A B A B ...):

- throughput at saturation: wrk, closed loop, 32 and 128 connections, chat (non-streamed) and
  chat streamed (10 SSE chunks plus usage); gateway CPU per request from /proc of its whole
  process tree, and of Redis + Postgres;
- latency at a constant rate (open loop, measured from each request's scheduled start, so a
  slow answer cannot hide the queue behind it): one connection at --c1-rate requests a second,
  and a rate of half the target's own 32-connection throughput; added latency is the target's
  percentile minus the direct call's; for streams the time to the first event.

Afterwards, unless --soak 0: 1,000 concurrent streams held against Sluicegate for --soak
seconds (each stream about 10 s long), counting errors and sampling the process tree's RSS.

One scenario alone: --scenarios throughput, latency or soak (a comma-separated list; default
all three). Prints a Markdown report (stdout) and, with --summary, only the table of ratios.
Linux only.

    python bench/compare.py [--rounds 3] [--duration 10] [--soak 300] [--output raw.json]
        [--litellm /tmp/litellm-venv/bin/litellm] [--targets direct,floor,sluicegate,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx
from guard_overhead import make_keys
from proxy_overhead import (
    REDIS_URL,
    Server,
    create_database,
    drop_keys,
    drop_stores,
    free_port,
    launch,
    tree,
    tree_cpu,
)

BENCH = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
SOAK_MODEL = "gpt-4o-mini-slow"
SOAK_STREAMS = 1000
SOAK_CHUNK_DELAY_MS = 1000  # 10 chunks about a second apart: each soak stream lasts ~10 s
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello to the world in one short sentence."},
]
# max_tokens 8: the role chunk, 8 word chunks and the finish chunk are 10 chunks, then usage.
CHAT = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8}
STREAM = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
TARGETS = (
    "direct", "floor", "sluicegate", "sluicegate-split", "sluicegate-2w", "litellm", "baseline"
)  # fmt: skip
SCENARIOS = ("throughput", "latency", "soak")
# LiteLLM's proxy takes about 30 s to start here.
LITELLM_STARTUP_SECONDS = 90.0
REQUEST_TIMEOUT_SECONDS = 30.0


# --- processes ---------------------------------------------------------------------------------


def tree_memory(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) in MiB, summed over the process tree (the peaks of each process)."""
    rss = peak = 0
    for member in tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return rss / 1024, peak / 1024


def store_pids() -> dict[str, int]:
    """Redis's and the Postgres postmaster's pids, to charge their CPU time too."""
    pids = {}
    info = subprocess.run(
        ["redis-cli", "-u", REDIS_URL, "info", "server"], capture_output=True, text=True
    ).stdout
    for line in info.splitlines():
        if line.startswith("process_id:"):
            pids["redis"] = int(line.split(":")[1])
    data = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "show data_directory"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    try:
        pids["postgres"] = int(Path(data, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        # Another user's cluster, say: the report then charges Redis alone.
        print(f"warning: Postgres's CPU is not counted ({exc})", file=sys.stderr)
    return pids


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    key: str
    server: Server | None  # None for "direct": its CPU is the upstream's, not a gateway's
    workers: int = 1
    soak_model: str | None = None
    helpers: list[Server] = field(default_factory=list)  # counted as part of the gateway

    def cpu(self) -> float:
        if self.server is None:
            return 0.0
        return sum(tree_cpu(s.process.pid) for s in (self.server, *self.helpers))

    def memory(self) -> tuple[float, float]:
        assert self.server is not None
        both = [tree_memory(s.process.pid) for s in (self.server, *self.helpers)]
        return sum(rss for rss, _ in both), sum(peak for _, peak in both)


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Closed:
    target: str
    connections: int
    stream: bool
    requests: int
    errors: int
    seconds: float
    cpu_ms: float  # gateway CPU per request
    store_cpu_ms: float  # Redis + Postgres CPU per request
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def closed_loop(
    target: Target, connections: int, stream: bool, seconds: float, stores: dict[str, int]
) -> Closed:
    env = os.environ | {
        "COMPARE_KEY": target.key,
        "COMPARE_BODY": json.dumps(STREAM if stream else CHAT),
    }
    command = [
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
        "-s", str(BENCH / "wrk" / "compare.lua"), target.url,
    ]  # fmt: skip
    before = target.cpu(), sum(tree_cpu(pid) for pid in stores.values())
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    after = target.cpu(), sum(tree_cpu(pid) for pid in stores.values())
    summary = json.loads(output.strip().splitlines()[-1])
    requests = max(summary["requests"], 1)
    errors = sum(summary[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Closed(
        target.name,
        connections,
        stream,
        summary["requests"],
        errors,
        summary["duration_us"] / 1e6,
        (after[0] - before[0]) * 1000 / requests,
        (after[1] - before[1]) * 1000 / requests,
        summary["p50"] / 1000,
        summary["p99"] / 1000,
    )


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the load generator, parsed with httptools (the
    parser uvicorn uses): a pre-encoded request, and back the status, when the body's first
    bytes came and how it ended. Costs the client a few tens of microseconds per request, where
    httpx costs over a millisecond, which on two cores would be taken from the gateway."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.first: float | None = None
        self.tail = b""

    @classmethod
    async def open(cls, url: str) -> Connection:
        parts = httpx.URL(url)
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(cls, parts.host, parts.port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("closed by the server"))

    def _fail(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def send(self, payload: bytes) -> int:
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionResetError("closed by the server")
        self.first, self.tail = None, b""
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await asyncio.wait_for(self.done, REQUEST_TIMEOUT_SECONDS)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_bytes(url: str, key: str, body: dict[str, Any]) -> bytes:
    parts = httpx.URL(url)
    content = json.dumps(body).encode()
    head = (
        f"POST {parts.raw_path.decode()} HTTP/1.1\r\nHost: {parts.host}:{parts.port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(content)}\r\n\r\n"
    )
    return head.encode() + content


async def exchange(connection: Connection, payload: bytes, stream: bool) -> str | None:
    """Send one request; the error (None if it went well)."""
    try:
        status = await connection.send(payload)
    except (OSError, TimeoutError, httptools.HttpParserError) as exc:
        return type(exc).__name__
    if status != 200:
        return str(status)
    if stream and b"[DONE]" not in connection.tail:
        return "stream without [DONE]"  # a relayed upstream failure is an error event in a 200
    return None


@dataclass
class Open:
    target: str
    label: str  # "c=1" or "half"
    rate: float
    stream: bool
    latencies_ms: list[float] = field(default_factory=list)  # to the last byte
    first_ms: list[float] = field(default_factory=list)  # to the first bytes of the body
    errors: Counter[str] = field(default_factory=Counter)


async def open_loop(
    target: Target, label: str, rate: float, seconds: float, stream: bool, slots: int
) -> Open:
    """Requests at a constant rate on up to `slots` keep-alive connections; each latency counts
    from the request's scheduled start (so a slow answer cannot hide the queue behind it). The
    first second is a warm-up and is not kept."""
    result = Open(target.name, label, rate, stream)
    payload = request_bytes(target.url, target.key, STREAM if stream else CHAT)
    free: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [await Connection.open(target.url) for _ in range(slots)]
    for connection in connections:
        free.put_nowait(connection)
    warmup = 1.0
    start = time.perf_counter() + 0.1
    count = int(rate * (seconds + warmup))

    async def one(index: int) -> None:
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        connection = await free.get()
        error = await exchange(connection, payload, stream)
        ended, first = time.perf_counter(), connection.first
        if error is not None and connection.transport and connection.transport.is_closing():
            connection = await Connection.open(target.url)
        free.put_nowait(connection)
        if scheduled - start < warmup:
            return
        if error is not None:
            result.errors[error] += 1
            return
        result.latencies_ms.append((ended - scheduled) * 1000)
        if first is not None:
            result.first_ms.append((first - scheduled) * 1000)

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        while not free.empty():
            free.get_nowait().close()
    return result


@dataclass
class Soak:
    seconds: float
    streams: int
    completed: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)


async def soak(target: Target, seconds: float, streams: int) -> Soak:
    """`streams` connections, each streaming back to back until the end."""
    assert target.server is not None and target.soak_model is not None
    result = Soak(seconds, streams)
    payload = request_bytes(target.url, target.key, STREAM | {"model": target.soak_model})
    began = time.perf_counter()
    deadline = began + seconds

    async def client_loop(index: int) -> None:
        await asyncio.sleep(index * 10 / streams)  # spread the starts over one stream's length
        connection = await Connection.open(target.url)
        while time.perf_counter() < deadline:
            result.in_flight += 1
            result.most_in_flight = max(result.most_in_flight, result.in_flight)
            error = await exchange(connection, payload, True)
            result.in_flight -= 1
            if error is None:
                result.completed += 1
                continue
            result.errors[error] += 1
            if connection.transport is None or connection.transport.is_closing():
                connection = await Connection.open(target.url)
        connection.close()

    async def sample() -> None:
        pid = target.server.process.pid  # type: ignore[union-attr]
        while time.perf_counter() < deadline:
            await asyncio.sleep(10)
            result.rss_mib.append((time.perf_counter() - began, tree_memory(pid)[0]))
            print(f"  soak {time.perf_counter() - began:.0f} s: {result.completed} streams done, "
                  f"{sum(result.errors.values())} errors, RSS {result.rss_mib[-1][1]:.0f} MiB",
                  file=sys.stderr)  # fmt: skip

    await asyncio.gather(sample(), *(client_loop(i) for i in range(streams)))
    return result


# --- figures -----------------------------------------------------------------------------------


def pct(values: list[float], p: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def spread(values: Iterable[float], digits: int = 2) -> str:
    data = sorted(values)
    if not data:
        return "-"
    median = statistics.median(data)
    if len(data) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({data[0]:,.{digits}f}-{data[-1]:,.{digits}f})"


def med(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


@dataclass
class Run:
    args: dict[str, Any]
    machine: dict[str, Any]
    closed: list[Closed] = field(default_factory=list)
    open: list[Open] = field(default_factory=list)
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    soak: Soak | None = None

    def closed_of(self, target: str, connections: int, stream: bool) -> list[Closed]:
        return [
            c
            for c in self.closed
            if (c.target, c.connections, c.stream) == (target, connections, stream)
        ]

    def open_of(self, target: str, label: str, stream: bool) -> list[Open]:
        return [o for o in self.open if (o.target, o.label, o.stream) == (target, label, stream)]

    def added(self, target: str, label: str, stream: bool, p: int, first: bool = False) -> float:
        """The median over rounds of (target's percentile - direct's percentile in that round)."""
        mine, direct = self.open_of(target, label, stream), self.open_of("direct", "c=1", stream)
        diffs = []
        for a, d in zip(mine, direct, strict=False):
            values_a = a.first_ms if first else a.latencies_ms
            values_d = d.first_ms if first else d.latencies_ms
            diffs.append(pct(values_a, p) - pct(values_d, p))
        return med(diffs)


def ratio_rows(run: Run) -> list[tuple[str, str]]:
    def rps(target: str, c: int, stream: bool = False) -> float:
        return med(r.rps for r in run.closed_of(target, c, stream))

    def cpu(target: str, stream: bool = False) -> float:
        return med(r.cpu_ms for r in run.closed_of(target, 32, stream))

    rows = []
    if "litellm" in run.args["targets"]:
        for c in (32, 128):
            rows.append(
                (f"throughput per worker, c={c}: Sluicegate / LiteLLM",
                 f"{rps('sluicegate', c) / rps('litellm', c):.1f}x")
            )  # fmt: skip
        rows.append(
            ("gateway CPU per request: LiteLLM / Sluicegate",
             f"{cpu('litellm') / cpu('sluicegate'):.1f}x")
        )  # fmt: skip
        added = run.added("litellm", "c=1", False, 50) / run.added("sluicegate", "c=1", False, 50)
        rows.append(("added p50 latency at c=1: LiteLLM / Sluicegate", f"{added:.1f}x"))
    if "floor" in run.args["targets"]:
        rows.append(
            ("gateway CPU per request: Sluicegate / floor",
             f"{cpu('sluicegate') / cpu('floor'):.2f}x")
        )  # fmt: skip
        rows.append(
            ("gateway CPU per streamed request: Sluicegate / floor",
             f"{cpu('sluicegate', True) / cpu('floor', True):.2f}x")
        )  # fmt: skip
        rows.append(
            ("throughput c=32: Sluicegate / floor",
             f"{rps('sluicegate', 32) / rps('floor', 32):.2f}x")
        )  # fmt: skip
    if "baseline" in run.args["targets"]:
        rows.append(
            (f"gateway CPU per request: Sluicegate / baseline ({run.args['baseline']})",
             f"{cpu('sluicegate') / cpu('baseline'):.2f}x")
        )  # fmt: skip
        rows.append(
            (f"gateway CPU per streamed request: Sluicegate / baseline ({run.args['baseline']})",
             f"{cpu('sluicegate', True) / cpu('baseline', True):.2f}x")
        )  # fmt: skip
    rows.append(("Sluicegate CPU ms per request (target <= 1.0)", f"{cpu('sluicegate'):.2f}"))
    rows.append(
        ("Sluicegate CPU ms per streamed request (target <= 1.5)", f"{cpu('sluicegate', True):.2f}")
    )
    rows.append(
        ("Sluicegate added p50 / p99 ms at c=1 (targets <= 1 / <= 5)",
         f"{run.added('sluicegate', 'c=1', False, 50):.2f} / "
         f"{run.added('sluicegate', 'c=1', False, 99):.2f}")
    )  # fmt: skip
    if "sluicegate-2w" in run.args["targets"]:
        rows.append(
            ("throughput c=128: 2 workers / 1 worker",
             f"{rps('sluicegate-2w', 128) / rps('sluicegate', 128):.2f}x")
        )  # fmt: skip
    return [(what, value) for what, value in rows if "nan" not in value]  # loads not run


def markdown(run: Run) -> str:
    a, m = run.args, run.machine
    out = [
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in m.items()),
        "",
        f"Command: `{a['command']}` ({a['rounds']} rounds, {a['duration']} s per closed-loop "
        f"run, {a['open_seconds']} s per open-loop run, targets in the order "
        f"{', '.join(a['targets'])} in every round).",
        "",
        "## Ratios",
        "",
        "| what | value |",
        "| --- | ---: |",
        *(f"| {what} | {value} |" for what, value in ratio_rows(run)),
        "",
        "## Throughput at saturation (closed loop, wrk)",
        "",
        "Medians over the rounds, min-max in brackets. CPU is per request: the gateway's whole "
        "process tree, and Redis + Postgres beside it.",
        "",
        "| load | target | req/s | p50 ms | p99 ms | gateway CPU ms/req | Redis+PG CPU ms/req "
        "| errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stream, connections in ((False, 32), (False, 128), (True, 32), (True, 128)):
        for target in a["targets"]:
            rows = run.closed_of(target, connections, stream)
            if not rows:
                continue
            load = f"{'stream' if stream else 'chat'} c={connections}"
            cpu = "-" if target == "direct" else spread(r.cpu_ms for r in rows)
            out.append(
                f"| {load} | {target} | {spread((r.rps for r in rows), 0)} "
                f"| {spread(r.p50_ms for r in rows)} | {spread(r.p99_ms for r in rows)} | {cpu} "
                f"| {spread(r.store_cpu_ms for r in rows)} | {sum(r.errors for r in rows)} |"
            )
    out += [
        "",
        "## Latency at a constant rate (open loop)",
        "",
        "Each figure is the median over the rounds of one run's percentile; 'added' subtracts "
        "the direct call's percentile at c=1 in the same round. For streams, 'first' is the time "
        "to the first bytes of the body (the first SSE event).",
        "",
        "| load | target | rate/s | p50 ms | p90 ms | p99 ms | added p50 | added p90 | added p99 "
        "| first p50 | added first p50 | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stream, label in ((False, "c=1"), (True, "c=1"), (False, "half")):
        for target in a["targets"]:
            rows = run.open_of(target, label, stream)
            if not rows:
                continue
            p = {q: med(pct(r.latencies_ms, q) for r in rows) for q in (50, 90, 99)}
            added = {q: run.added(target, label, stream, q) for q in (50, 90, 99)}
            first = med(pct(r.first_ms, 50) for r in rows) if stream else float("nan")
            added_first = run.added(target, label, stream, 50, True) if stream else float("nan")
            out.append(
                f"| {'stream' if stream else 'chat'} {label} | {target} "
                f"| {med(r.rate for r in rows):,.0f} | {p[50]:.2f} | {p[90]:.2f} | {p[99]:.2f} "
                f"| {added[50]:.2f} | {added[90]:.2f} | {added[99]:.2f} "
                f"| {first:.2f} | {added_first:.2f} | {sum(sum(r.errors.values()) for r in rows)} |"
            )
    out += [
        "",
        "## Memory",
        "",
        "| target | RSS MiB at the end | peak RSS MiB |",
        "| --- | ---: | ---: |",
    ]
    out += [f"| {t} | {rss:.0f} | {peak:.0f} |" for t, (rss, peak) in run.memory.items()]
    if run.soak is not None:
        s = run.soak
        minute = next((rss for t, rss in s.rss_mib if t >= 60), float("nan"))
        last = s.rss_mib[-1][1] if s.rss_mib else float("nan")
        out += [
            "",
            f"## Soak: {s.streams} concurrent streams for {s.seconds:.0f} s (Sluicegate, 1 worker)",
            "",
            f"- streams open at once: at most {s.most_in_flight:,}",
            f"- streams completed: {s.completed:,}; errors: {sum(s.errors.values())} "
            f"{dict(s.errors) if s.errors else ''}",
            f"- RSS after 1 minute {minute:.0f} MiB, at the end {last:.0f} MiB "
            f"({(last / minute - 1) * 100:+.1f}%)",
            "- RSS every 10 s (MiB): " + ", ".join(f"{rss:.0f}" for _, rss in s.rss_mib),
        ]
    return "\n".join(out)


# --- the run ---------------------------------------------------------------------------------


def versions(litellm: Path | None) -> dict[str, Any]:
    import uvicorn

    def output(command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except OSError:
            return "not found"
        return (done.stdout or done.stderr).strip().splitlines()[0]

    found: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": output(["git", "-C", str(BENCH), "rev-parse", "--short", "HEAD"]),
        "cpu": f"{os.cpu_count()} cores, "
        + next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
        "python": platform.python_version(),
        "uvicorn / httpx": f"{uvicorn.__version__} / {httpx.__version__}",
        "wrk": output(["wrk", "--version"]),
        "redis": output(["redis-server", "--version"]),
        "postgres": output(["psql", "--version"]),
        "load average before": f"{os.getloadavg()[0]:.2f}",
    }
    if litellm is not None:
        python = litellm.parent / "python"
        found["litellm"] = output(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"]
        )
    return found


def start_all(args: argparse.Namespace, tmp: Path, database: str, prefix: str) -> list[Target]:
    """Start every target (and the upstream); returns them in the order of --targets."""
    servers = args.servers
    mock_port = free_port()
    mock = launch(
        "mock",
        [sys.executable, "-m", "sluicegate.mockupstream", "--port", str(mock_port)],
        {},
        tmp,
        mock_port,
        "/health",
    )
    servers.append(mock)
    upstream = f"{mock.base_url}/v1"
    targets: dict[str, Target] = {
        "direct": Target("direct", f"{upstream}/chat/completions", "mock", None)
    }
    if "floor" in args.targets:
        port = free_port()
        floor = launch(
            "floor",
            [sys.executable, str(BENCH / "floor.py"), "--upstream", mock.base_url,
             "--port", str(port), "--workers", "1"],
            {},
            tmp,
            port,
            "/healthz",
        )  # fmt: skip
        servers.append(floor)
        targets["floor"] = Target("floor", f"{floor.base_url}/v1/chat/completions", "-", floor)
    if {"sluicegate", "sluicegate-split", "sluicegate-2w", "baseline"} & set(args.targets):
        providers = tmp / "providers.yaml"
        providers.write_text(
            "providers:\n"
            f"  - {{name: mock, type: openai, base_url: {upstream}, api_key: anything}}\n"
            f"  - {{name: mock-slow, type: openai, base_url: {upstream}, api_key: anything,\n"
            f"     max_connections: {SOAK_STREAMS + 200},\n"
            f"     headers: {{x-mock-stream-delay-ms: '{SOAK_CHUNK_DELAY_MS}'}}}}\n"
            "models:\n"
            f"  - {{id: {MODEL}, provider: mock}}\n"
            f"  - {{id: {SOAK_MODEL}, provider: mock-slow, upstream_model: {MODEL}}}\n"
        )
        env = {
            "SLUICEGATE_SECRET_KEY": secrets.token_urlsafe(48),
            "SLUICEGATE_PROVIDERS": str(providers),
            "SLUICEGATE_LOG_LEVEL": "warning",
            "SLUICEGATE_REDIS_PREFIX": prefix,
            "SLUICEGATE_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1/{database}",
            "SLUICEGATE_REDIS_URL": REDIS_URL,
        }
        asyncio.run(create_database(database))
        _plain, governed = asyncio.run(make_keys(env))
        variants = (
            ("sluicegate", 1), ("sluicegate-split", 1), ("sluicegate-2w", 2), ("baseline", 1)
        )  # fmt: skip
        for name, workers in variants:
            if name not in args.targets:
                continue
            # Each its own Redis prefix: its own usage streams, drained only by its own
            # processes (a shared consumer group would let one target drain another's events,
            # its CPU then counted for the wrong one), its own counters and invalidations.
            extra = {
                "SLUICEGATE_WORKERS": str(workers),
                "SLUICEGATE_REDIS_PREFIX": f"{prefix}_{name.replace('-', '_')}",
            }
            args.prefixes.append(extra["SLUICEGATE_REDIS_PREFIX"])
            helpers = []
            if name == "sluicegate-split":
                # The metering work (draining usage streams into Postgres) in a process of its
                # own, as `sluicegate worker`; its CPU is counted with the gateway's.
                extra["SLUICEGATE_RUN_WORKER"] = "false"
                port = free_port()
                helpers.append(
                    launch(
                        "usage-worker",
                        [sys.executable, "-m", "sluicegate", "worker", "--metrics-port", str(port)],
                        env | extra,
                        tmp,
                        port,
                        "/metrics",
                    )
                )
                servers.append(helpers[0])
            key = governed
            if name == "baseline":
                # A database of its own, migrated and keyed by the baseline's own code: a schema
                # the working tree migrated further may refuse what the older code writes (a
                # rollup key that gained a column), and a target whose writes fail does less
                # work than it should, which would flatter it.
                source = checkout(args.baseline, tmp)
                extra["PYTHONPATH"] = str(source / "src")
                extra["SLUICEGATE_DATABASE_URL"] = env["SLUICEGATE_DATABASE_URL"] + "_baseline"
                args.databases.append(f"{database}_baseline")
                asyncio.run(create_database(f"{database}_baseline"))
                key = baseline_keys(source, env | extra)
            port = free_port()
            gateway = launch(
                name,
                [sys.executable, "-m", "sluicegate", "serve", "--port", str(port)],
                env | extra,
                tmp,
                port,
                "/healthz",
            )
            servers.append(gateway)
            targets[name] = Target(
                name, f"{gateway.base_url}/v1/chat/completions", key, gateway, workers,
                SOAK_MODEL, helpers,
            )  # fmt: skip
    if "litellm" in args.targets:
        port = free_port()
        master = "sk-bench-" + secrets.token_hex(8)
        config = tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {MODEL}\n"
            "    litellm_params:\n"
            f"      model: openai/{MODEL}\n"
            f"      api_base: {upstream}\n"
            "      api_key: anything\n"
            "      rpm: 1000000000\n"
            "      tpm: 1000000000000\n"
            "router_settings:\n"
            "  routing_strategy: usage-based-routing-v2\n"
            "  redis_host: 127.0.0.1\n"
            "  redis_port: 6379\n"
            "litellm_settings:\n"
            "  num_retries: 0\n"
            "  request_timeout: 30\n"
            "general_settings:\n"
            f"  master_key: {master}\n"
        )
        litellm = launch(
            "litellm",
            [str(args.litellm), "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--num_workers", "1"],
            {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
            tmp,
            port,
            "/health/liveliness",
            startup_seconds=LITELLM_STARTUP_SECONDS,
        )  # fmt: skip
        servers.append(litellm)
        targets["litellm"] = Target("litellm", f"{litellm.base_url}/v1/chat/completions", master,
                                    litellm)  # fmt: skip
    return [targets[name] for name in args.targets]


def baseline_keys(source: Path, env: dict[str, str]) -> str:
    """The governed key of the baseline's database, made by the baseline's own bench code."""
    script = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[1]); "
        "from guard_overhead import make_keys; print(asyncio.run(make_keys(dict(__import__('os')"
        ".environ)))[1])"
    )
    made = subprocess.run(
        [sys.executable, "-c", script, str(source / "bench")],
        env=os.environ | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip().splitlines()[-1]


def checkout(revision: str, tmp: Path) -> Path:
    """The source tree of `revision` (a commit of this repository), exported into tmp."""
    into = tmp / "baseline"
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(BENCH.parent), "archive", revision, "src", "bench", "migrations"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def check(target: Target) -> None:
    """One request of each kind must succeed before anything is measured."""
    headers = {"authorization": f"Bearer {target.key}"}
    for body in (CHAT, STREAM):
        response = httpx.post(target.url, json=body, headers=headers, timeout=30)
        if response.status_code != 200 or (body is STREAM and b"[DONE]" not in response.content):
            raise RuntimeError(f"{target.name}: {response.status_code} {response.text[:300]}")


def measure(args: argparse.Namespace, targets: list[Target], run: Run) -> None:
    stores = store_pids()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    for target in targets:
        check(target)
        # Warm up: connections, caches, the JIT-less interpreter's first-call costs.
        closed_loop(target, 32, False, 3, stores)
    with runner:
        for round_ in range(args.rounds):
            for stream, connections in args.closed if "throughput" in args.scenarios else ():
                for target in targets:
                    result = closed_loop(target, connections, stream, args.duration, stores)
                    run.closed.append(result)
                    print(f"round {round_ + 1}: {'stream' if stream else 'chat'} "
                          f"c={connections} {target.name}: {result.rps:,.0f} req/s, "
                          f"{result.cpu_ms:.2f} ms CPU/req, {result.errors} errors",
                          file=sys.stderr)  # fmt: skip
            if "latency" not in args.scenarios:
                continue
            for stream in (False, True):
                for target in targets:
                    result = runner.run(
                        open_loop(target, "c=1", args.c1_rate, args.open_seconds, stream, 1)
                    )
                    run.open.append(result)
                    print(f"round {round_ + 1}: open c=1 {'stream' if stream else 'chat'} "
                          f"{target.name}: p50 {pct(result.latencies_ms, 50):.2f} ms, "
                          f"p99 {pct(result.latencies_ms, 99):.2f} ms",
                          file=sys.stderr)  # fmt: skip
            for target in targets:
                if target.name == "direct":
                    continue
                measured = run.closed_of(target.name, 32, False)
                if measured:
                    saturation = med(r.rps for r in measured)
                else:  # latency alone: find the saturation first (not reported)
                    saturation = closed_loop(target, 32, False, 5, stores).rps
                rate = max(1.0, saturation / 2)
                result = runner.run(open_loop(target, "half", rate, args.open_seconds, False, 64))
                run.open.append(result)
                print(f"round {round_ + 1}: open {rate:.0f}/s {target.name}: "
                      f"p50 {pct(result.latencies_ms, 50):.2f} ms, "
                      f"p99 {pct(result.latencies_ms, 99):.2f} ms", file=sys.stderr)  # fmt: skip
        for target in targets:
            if target.server is not None:
                run.memory[target.name] = target.memory()
        soaked = next((t for t in targets if t.name == "sluicegate"), None)
        if args.soak > 0 and "soak" in args.scenarios and soaked is not None:
            run.soak = runner.run(soak(soaked, args.soak, SOAK_STREAMS))
            run.memory["sluicegate (after the soak)"] = soaked.memory()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per closed-loop run")
    parser.add_argument("--open-seconds", type=int, default=10, help="seconds per open-loop run")
    parser.add_argument("--c1-rate", type=float, default=25.0, help="requests/s on one connection")
    parser.add_argument("--connections", default="32,128", help="closed-loop connection counts")
    parser.add_argument("--soak", type=int, default=300, help="soak seconds (0: no soak)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS),
        help="which to run: throughput (closed loop), latency (open loop), soak",
    )  # fmt: skip
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument(
        "--litellm", type=Path, default=Path("/tmp/litellm-venv/bin/litellm"),
        help="the litellm command of its own virtual environment",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", default="HEAD",
        help="the commit the 'baseline' target runs (default HEAD: the last commit, against "
        "the working tree's changes in 'sluicegate')",
    )  # fmt: skip
    parser.add_argument("--summary", action="store_true", help="print only the ratios")
    parser.add_argument("--output", type=Path, help="also write the raw figures as JSON")
    args = parser.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.scenarios = [t for t in args.scenarios.split(",") if t]
    if not args.scenarios or set(args.scenarios) - set(SCENARIOS):
        parser.error(f"scenarios are some of {', '.join(SCENARIOS)}")
    unknown = set(args.targets) - set(TARGETS)
    if unknown or "direct" not in args.targets:
        parser.error(f"targets are some of {', '.join(TARGETS)}, direct always among them")
    if "litellm" in args.targets and not args.litellm.exists():
        parser.error(
            f"{args.litellm} not found: python -m venv /tmp/litellm-venv && "
            "/tmp/litellm-venv/bin/pip install 'litellm[proxy]==1.108.7' (or --targets without "
            "litellm)"
        )
    counts = [int(c) for c in args.connections.split(",")]
    args.closed = [(False, c) for c in counts] + [(True, c) for c in counts]
    args.servers = []
    args.prefixes = []
    args.databases = []
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # 1,000 streams need 1,000 sockets in each of the client, the gateway (twice) and the mock.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    run_id = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="sluicegate-compare-"))
    database, prefix = f"sluicegate_compare_{run_id}", f"sgcompare_{run_id}"
    command = "python bench/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    run = Run(
        {
            "command": command.strip(),
            "rounds": args.rounds,
            "duration": args.duration,
            "open_seconds": args.open_seconds,
            "targets": args.targets,
            "scenarios": args.scenarios,
            "baseline": args.baseline,
        },
        versions(args.litellm if "litellm" in args.targets else None),
    )
    try:
        targets = start_all(args, tmp, database, prefix)
        measure(args, targets, run)
        run.machine["load average after"] = f"{os.getloadavg()[0]:.2f}"
        if args.summary:
            print("| what | value |\n| --- | ---: |")
            print("\n".join(f"| {what} | {value} |" for what, value in ratio_rows(run)))
        else:
            print(markdown(run))
        if args.output is not None:
            args.output.write_text(json.dumps(_plain(run), indent=1))
        for server in args.servers:
            if server.process.poll() is not None:
                print(f"warning: {server.name} exited:\n{server.log_tail()}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for server in reversed(args.servers):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        asyncio.run(drop_stores(database, prefix))
        for each in args.databases:
            asyncio.run(drop_stores(each, prefix))
        for each in args.prefixes:
            asyncio.run(drop_keys(each))


def _plain(run: Run) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(run)


if __name__ == "__main__":
    raise SystemExit(main())
