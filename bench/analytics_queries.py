"""How fast analytics answers over a year of one org's usage, and how much memory a year's CSV
export takes: `sluicegate serve` over the database bench/generate_year.py filled, measured over
HTTP, with the same queries run in SQL under EXPLAIN ANALYZE to show where the time goes.

Each query: warm-up, then up to N sequential repetitions (fewer once --budget seconds are spent,
never under 5); p50, p95 and max latency, the gateway's and Postgres's CPU per request, the
response size, and a check of its totals against the rollups.
  (a) analytics/activity over the year, groupBy=model, granularity=day, in the org's zone
  (b) the same in another zone (default Asia/Kathmandu, UTC+05:45: read from 15-minute buckets)
  (c) analytics/members over the year
  (d) analytics/activity groupBy=member and groupBy=key, granularity=month
  plus the endpoints around them: the activity feed's first page, the ledger, insights.
Then the year's CSV exports, streamed to nowhere while the gateway's resident memory is
sampled from /proc (VmRSS every 20 ms, and VmHWM reset before each export): the raw activity
feed (`activity.csv`, one line per request) and `analytics/activity.csv` when it exists.
Endpoints the gateway does not serve (yet) are reported as pending.

    python bench/analytics_queries.py --database-url postgresql+asyncpg://postgres@127.0.0.1/sg_bench_year
        [--repeat 50] [--warmup 5] [--other-zone Asia/Kathmandu] [--skip-export] [--output r.json]
    python bench/analytics_queries.py [--requests 1000000 | --full]   # generates its own data

Without --database-url it generates a database of its own (1M requests by default, 10M with
--full) and drops it on exit. The org, its zone and the secret key come from the generator's
info file (`--info`, default ~/.cache/sluicegate/bench-<database>.json) or `--org`; the script
issues a fresh admin token of the org's owner. The report (Markdown, with the machine, the load
and a digest of the analytics code) goes to stdout, progress to stderr. Needs Postgres and Redis
on localhost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from generate_year import asyncpg_dsn, default_info_path, with_database
from proxy_overhead import CLOCK_TICKS, REDIS_URL, Server, start_server

API = "/api/v1"
# Export chunks are counted as they arrive; nothing is kept but the last line.
TAIL_BYTES = 512
RSS_SAMPLE_SECONDS = 0.02
MIN_REPEAT = 5
# The gateway's connections keep their prepared statements, and Postgres plans the first five
# executions of one for their parameters; from the sixth on it may run a generic plan instead.
# Warm-up runs these five, so that every measured run is what a long-running gateway serves.
GENERIC_AFTER = 5


# --- the data and who may read it -------------------------------------------------------------


@dataclass
class Target:
    url: str
    org_id: str
    zone: str
    first: date  # first and last local day with usage
    last: date
    secret_key: str
    token: str = ""


async def find_target(url: str, info: dict[str, Any], org_id: str | None) -> Target:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if org_id is None:
            org_id = info.get("org_id") or await conn.fetchval(
                "SELECT org_id FROM usage_daily_rollups GROUP BY org_id "
                "ORDER BY sum(requests) DESC LIMIT 1"
            )
        if org_id is None:
            raise SystemExit("no usage in this database; fill it with bench/generate_year.py")
        zone = await conn.fetchval("SELECT timezone FROM organizations WHERE id = $1", org_id)
        first, last = await conn.fetchrow(
            "SELECT min(day), max(day) FROM usage_daily_rollups WHERE org_id = $1 AND zone = $2",
            org_id,
            zone,
        )
    finally:
        await conn.close()
    secret = info.get("secret_key") or secrets.token_urlsafe(48)
    return Target(url, org_id, zone, first, last, secret)


async def owner_token(target: Target) -> str:
    """A new admin token of the org's owner, peppered with the secret key the gateway gets."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from sluicegate.core.db import make_engine
    from sluicegate.identity.models import User
    from sluicegate.identity.service import issue_admin_token
    from sluicegate.orgs.models import RoleBinding

    engine = make_engine(target.url, pool_size=1)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            owner = (
                await session.execute(
                    select(User)
                    .join(RoleBinding, RoleBinding.user_id == User.id)
                    .where(RoleBinding.org_id == target.org_id, RoleBinding.role == "owner")
                    .limit(1)
                )
            ).scalar_one()
            _token, secret = await issue_admin_token(
                session, owner, pepper=target.secret_key.encode(), name="analytics benchmark"
            )
            return secret
    finally:
        await engine.dispose()


# --- measuring ------------------------------------------------------------------------------


def cpu_of(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS


class Backends:
    """CPU seconds of the Postgres backends serving the benchmark database (same machine)."""

    def __init__(self, url: str) -> None:
        self.dsn = asyncpg_dsn(with_database(url, "postgres"))
        self.database = urlsplit(url).path.lstrip("/")

    def cpu(self) -> dict[int, float]:
        async def pids() -> list[int]:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", self.database
                )
                return [row["pid"] for row in rows]
            finally:
                await conn.close()

        return {pid: cpu_of(pid) for pid in asyncio.run(pids())}

    @staticmethod
    def spent(before: dict[int, float], after: dict[int, float]) -> float:
        return sum(value - before.get(pid, 0.0) for pid, value in after.items())


@dataclass
class Figures:
    name: str
    path: str
    params: dict[str, str]
    status: int = 0
    bytes: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    gateway_cpu_ms: float = 0.0  # per request
    postgres_cpu_ms: float = 0.0
    summary: str = ""
    check: str = ""
    pending: bool = False
    repeat: int = 0

    def cut(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def describe(body: Any) -> str:
    if isinstance(body, dict) and "groups" in body:
        totals = body.get("totals", {})
        return (
            f"{len(body['groups'])} groups, {len(body.get('series', []))} series points, "
            f"{totals.get('requests', '?'):,} requests, {totals.get('cost_usd', '?')} USD"
        )
    if isinstance(body, dict) and "items" in body:
        return f"{len(body['items'])} items"
    if isinstance(body, list):
        return f"{len(body)} items"
    return ", ".join(list(body)[:6]) if isinstance(body, dict) else type(body).__name__


def measure(
    client: httpx.Client,
    gateway: Server,
    backends: Backends,
    figures: Figures,
    warmup: int,
    repeat: int,
    budget: float,
) -> Figures:
    for _ in range(max(warmup, 1)):
        response = client.get(figures.path, params=figures.params)
    figures.status = response.status_code
    if response.status_code != 200:
        figures.summary = response.text[:300]
        return figures
    figures.bytes = len(response.content)
    figures.summary = describe(response.json())
    # A slow query gets fewer repetitions (never under MIN_REPEAT) so a run stays bounded. The
    # budget is counted as the runs go rather than foreseen from one run: a run of the custom
    # plans says nothing of the generic ones that may follow (see GENERIC_AFTER).
    cpu, db = gateway.cpu_seconds(), backends.cpu()
    spent = 0.0
    while len(figures.latencies_ms) < max(repeat, 1) and (
        len(figures.latencies_ms) < MIN_REPEAT or spent < budget
    ):
        began = time.perf_counter()
        response = client.get(figures.path, params=figures.params)
        response.read()
        elapsed = time.perf_counter() - began
        spent += elapsed
        figures.latencies_ms.append(elapsed * 1000)
        response.raise_for_status()
    figures.repeat = len(figures.latencies_ms)
    figures.gateway_cpu_ms = (gateway.cpu_seconds() - cpu) * 1000 / figures.repeat
    figures.postgres_cpu_ms = Backends.spent(db, backends.cpu()) * 1000 / figures.repeat
    figures.check = check_totals(figures, response.json())
    print(f"  {figures.name}: p50 {figures.cut(50):.0f} ms", file=sys.stderr)
    return figures


# The totals each answer must show, from the rollups (filled in by expected_totals()).
EXPECTED: dict[tuple[str, str], int] = {}


def check_totals(figures: Figures, body: Any) -> str:
    zone = figures.params.get("timezone", "")
    expected = EXPECTED.get((figures.path.rsplit("/", 1)[-1], zone))
    if expected is None or not isinstance(body, dict) or "totals" not in body:
        return ""
    got = body["totals"].get("requests")
    return "requests match the rollups" if got == expected else f"requests {got} != {expected}"


async def expected_totals(target: Target, other_zone: str) -> None:
    """Requests over the year as the rollups count them, in the org's zone and in another."""
    conn = await asyncpg.connect(asyncpg_dsn(target.url))
    try:
        for zone in (target.zone, other_zone):
            lo = datetime.combine(target.first, datetime.min.time(), ZoneInfo(zone))
            hi = datetime.combine(target.last + timedelta(days=1), datetime.min.time(), lo.tzinfo)
            EXPECTED[("activity", "" if zone == target.zone else zone)] = int(
                await conn.fetchval(
                    "SELECT coalesce(sum(requests), 0) FROM usage_rollups WHERE org_id = $1 "
                    "AND bucket_start >= $2 AND bucket_start < $3",
                    target.org_id,
                    lo.astimezone(UTC),
                    hi.astimezone(UTC),
                )
            )
    finally:
        await conn.close()


# --- exports and memory ---------------------------------------------------------------------


def vm(pid: int, name: str) -> int:
    """A /proc/<pid>/status figure in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Export:
    name: str
    path: str
    params: dict[str, str]
    status: int = 0
    seconds: float = 0.0
    first_byte_s: float = 0.0
    bytes: int = 0
    rows: int = 0
    rss_before_mib: float = 0.0
    rss_peak_mib: float = 0.0  # sampled VmRSS during the export
    hwm_mib: float = 0.0  # VmHWM after the export (reset before it when the kernel allows)
    hwm_reset: bool = False
    gateway_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0
    complete: bool = True
    pending: bool = False
    note: str = ""


def export(client: httpx.Client, gateway: Server, backends: Backends, job: Export) -> Export:
    pid = gateway.process.pid
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        job.hwm_reset = True
    except OSError:
        job.hwm_reset = False
    job.rss_before_mib = vm(pid, "VmRSS") / 1024
    peak = [vm(pid, "VmRSS")]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(RSS_SAMPLE_SECONDS):
            peak[0] = max(peak[0], vm(pid, "VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu, db = gateway.cpu_seconds(), backends.cpu()
    began = time.perf_counter()
    tail = b""
    try:
        with client.stream("GET", job.path, params=job.params, timeout=None) as response:
            job.status = response.status_code
            for chunk in response.iter_bytes():
                if not job.first_byte_s:
                    job.first_byte_s = time.perf_counter() - began
                job.bytes += len(chunk)
                job.rows += chunk.count(b"\n")
                tail = (tail + chunk)[-TAIL_BYTES:]
    finally:
        job.seconds = time.perf_counter() - began
        stop.set()
        sampler.join()
    job.gateway_cpu_s = gateway.cpu_seconds() - cpu
    job.postgres_cpu_s = Backends.spent(db, backends.cpu())
    job.rss_peak_mib = peak[0] / 1024
    job.hwm_mib = vm(pid, "VmHWM") / 1024
    job.rows = max(job.rows - 1, 0)  # the header line
    last_line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    job.complete = job.status == 200 and not last_line.startswith(b"# export incomplete")
    if not job.complete:
        job.note = last_line.decode(errors="replace")[:200]
    print(f"  export {job.name}: {job.rows:,} rows in {job.seconds:.0f} s", file=sys.stderr)
    return job


# --- the same queries in SQL ----------------------------------------------------------------


def scans_of(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes that read a table or an index."""
    found = [node] if "Relation Name" in node or "Index Name" in node else []
    for child in node.get("Plans", []):
        found += scans_of(child)
    return found


def plan_outline(node: dict[str, Any], depth: int = 0) -> str:
    """A plan as one line: node types nested, scans with their table and loop count."""
    name = node["Node Type"]
    if "Relation Name" in node:
        name += f" {node['Relation Name']}"
    if node.get("Actual Loops", 1) > 1:
        name += f" x{node['Actual Loops']:,}"
    children = node.get("Plans", [])
    if not children or depth >= 5:
        return name
    return f"{name}({', '.join(plan_outline(child, depth + 1) for child in children)})"


def statement_kind(sql: str) -> str:
    """What a statement of the analytics repository computes, told by its SQL."""
    if "buckets" in sql:
        return "series (join on the buckets' bounds)"
    if "width_bucket" in sql:
        return "series (width_bucket over the bounds)"
    if "RECURSIVE" in sql:
        return "count of values (one index probe each)"
    if "usage_org_daily_rollups" in sql and "GROUP BY" not in sql:
        return "series (org-wide rows as stored)"
    grouped = sql.rsplit("GROUP BY", 1)[1] if "GROUP BY" in sql else ""
    if not grouped or grouped.count(")") > grouped.count("("):  # none, or only in a subquery
        return "totals"
    if ".day" in grouped or ".bucket_start" in grouped:
        return "series (per day or bucket)"
    return "groups"


def plan_figures(name: str, plan: Any, app_ms: float | None = None) -> dict[str, Any]:
    root = (json.loads(plan) if isinstance(plan, str) else plan)[0]
    node = root["Plan"]
    scans = scans_of(node)
    return {
        "name": name,
        "app_ms": app_ms,
        "ms": root["Execution Time"],
        "rows_out": node.get("Actual Rows", 0),
        "rows_read": sum(s.get("Actual Rows", 0) * s.get("Actual Loops", 1) for s in scans),
        "shared_hit": node.get("Shared Hit Blocks", 0),
        "shared_read": node.get("Shared Read Blocks", 0),
        "outline": plan_outline(node),
        "plan": root,
    }


async def trace_endpoints(target: Target, other_zone: str) -> list[dict[str, Any]]:
    """Run what (a)-(d) run, in-process through the analytics service, recording each SQL
    statement it sends and how long it took; then EXPLAIN ANALYZE each of those statements."""
    from sqlalchemy import event, select
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from sluicegate.analytics import service
    from sluicegate.core.db import make_engine
    from sluicegate.identity.models import User
    from sluicegate.identity.service import actor_for
    from sluicegate.orgs.models import RoleBinding

    first, last = target.first.isoformat(), target.last.isoformat()
    year = service.WindowQuery(first, last, None, "day")
    month = service.WindowQuery(first, last, None, "month")
    other = service.WindowQuery(first, last, other_zone, "day")
    nothing = service.Filters()
    org, now = target.org_id, datetime.now(UTC)
    calls = {
        "(a) by model, day": lambda s, a: service.activity(
            s, a, org, year, nothing, group_by="model", metric="cost", now=now
        ),
        f"(b) by model, day, {other_zone}": lambda s, a: service.activity(
            s, a, org, other, nothing, group_by="model", metric="cost", now=now
        ),
        "(c) members": lambda s, a: service.members(
            s, a, org, year, nothing, cursor=None, limit=50, now=now
        ),
        "(d) by member, month": lambda s, a: service.activity(
            s, a, org, month, nothing, group_by="member", metric="cost", now=now
        ),
        "(d) by key, month": lambda s, a: service.activity(
            s, a, org, month, nothing, group_by="key", metric="cost", now=now
        ),
    }
    engine = make_engine(target.url, pool_size=1)
    sent: list[list[Any]] = []
    began: list[float] = []

    def before(*_args: Any) -> None:
        began.append(time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        sent.append([statement, parameters, (time.perf_counter() - began.pop()) * 1000])

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    results = []
    try:
        async with async_sessionmaker(engine)() as session:
            owner = (
                await session.execute(
                    select(User)
                    .join(RoleBinding, RoleBinding.user_id == User.id)
                    .where(RoleBinding.org_id == org, RoleBinding.role == "owner")
                )
            ).scalar_one()
            actor = actor_for(owner)
            for name, call in calls.items():
                sent.clear()
                try:
                    await call(session, actor)
                except Exception as exc:  # the service is young and changing: report, go on
                    results.append({"name": name, "error": repr(exc)[:300]})
                    continue
                # The statements over usage (rollups); lookups of the org and the caller's
                # roles take well under a millisecond each.
                statements = [entry for entry in sent if "usage_" in entry[0]]
                sent.clear()
                for statement, parameters, app_ms in statements:
                    result = await session.connection()
                    plan = (
                        await result.exec_driver_sql(
                            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}", parameters
                        )
                    ).scalar_one()
                    figures = plan_figures(name, plan, app_ms)
                    figures["sql"] = statement
                    figures |= await generic_plan(target, statement, parameters)
                    results.append(figures)
                sent.clear()
                print(f"  traced {name}: {len(statements)} statements", file=sys.stderr)
    finally:
        await engine.dispose()
    return results


async def generic_plan(target: Target, statement: str, parameters: Any) -> dict[str, Any]:
    """The statement under a generic plan, the one Postgres switches a prepared statement to
    after five executions when it looks no dearer: the gateway's connections cache prepared
    statements, so a long-running gateway mostly runs these. Time and plan (by auto_explain)."""
    conn = await asyncpg.connect(asyncpg_dsn(target.url))
    messages: list[str] = []
    conn.add_log_listener(lambda _conn, message: messages.append(message.message))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await conn.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                "SET auto_explain.log_analyze = on; SET auto_explain.log_format = 'json'; "
                "SET client_min_messages = log"
            )
        except asyncpg.PostgresError:
            pass  # not a superuser: the time alone
        began = time.perf_counter()
        await conn.fetch(statement, *parameters)
        ms = (time.perf_counter() - began) * 1000
        await conn.execute("SET client_min_messages = notice")
    finally:
        await conn.close()
    plans = [m.split("plan:", 1)[1] for m in messages if "plan:" in m]
    outline = ""
    if plans:
        outline = plan_outline(json.loads(plans[-1])["Plan"])
    return {"generic_ms": ms, "generic_outline": outline}


SUMS = "sum(cost_nusd), sum(requests), sum(prompt_tokens + completion_tokens)"


def reference_queries(target: Target, other_zone: str) -> list[tuple[str, str, list[Any]]]:
    """Plain GROUP BY queries over the same rows, for comparison, and the feed export's scan."""
    zone = ZoneInfo(other_zone)
    lo = datetime.combine(target.first, datetime.min.time(), zone).astimezone(UTC)
    hi = datetime.combine(target.last + timedelta(days=1), datetime.min.time(), zone)
    org, first, last = target.org_id, target.first, target.last
    feed_lo = datetime.combine(first, datetime.min.time(), ZoneInfo(target.zone))
    feed_hi = datetime.combine(last + timedelta(days=1), datetime.min.time(), feed_lo.tzinfo)
    return [
        (
            "reference (a): daily rollups, GROUP BY day, model",
            f"SELECT day, model, {SUMS} FROM usage_daily_rollups "  # noqa: S608
            "WHERE org_id = $1 AND zone = $2 AND day BETWEEN $3 AND $4 GROUP BY 1, 2",
            [org, target.zone, first, last],
        ),
        (
            f"reference (b): 15-minute rollups, GROUP BY local day in {other_zone}, model",
            f"SELECT (bucket_start AT TIME ZONE $4::text)::date, model, {SUMS} "  # noqa: S608
            "FROM usage_rollups WHERE org_id = $1 AND bucket_start >= $2 AND bucket_start < $3 "
            "GROUP BY 1, 2",
            [org, lo, hi.astimezone(UTC), other_zone],
        ),
        (
            "reference (e): the feed export's rows, newest first",
            "SELECT * FROM usage_events WHERE org_id = $1 AND created_at >= $2 "
            "AND created_at < $3 ORDER BY created_at DESC, request_id DESC",
            [org, feed_lo.astimezone(UTC), feed_hi.astimezone(UTC)],
        ),
    ]


async def explain_references(target: Target, other_zone: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(target.url))
    results = []
    try:
        for name, sql, params in reference_queries(target, other_zone):
            await conn.fetch(f"EXPLAIN (ANALYZE) {sql}", *params)  # warms the caches
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *params)
            results.append(plan_figures(name, plan) | {"sql": sql})
            print(f"  explain {name}: {results[-1]['ms']:.0f} ms", file=sys.stderr)
    finally:
        await conn.close()
    return results


# --- sizes and machine ----------------------------------------------------------------------


async def data_sizes(target: Target) -> dict[str, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(target.url))
    try:
        rows = {}
        for table in (
            "usage_events",
            "usage_rollups",
            "usage_daily_rollups",
            "usage_org_daily_rollups",
            "ledger_entries",
        ):
            rows[table] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE org_id = $1",  # noqa: S608
                target.org_id,
            )
        for table in ("api_keys", "memberships", "groups"):
            rows[table] = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE org_id = $1",  # noqa: S608
                target.org_id,
            )
        sizes = {}
        for table in (
            "usage_rollups",
            "usage_daily_rollups",
            "usage_org_daily_rollups",
            "ledger_entries",
        ):
            sizes[table] = await conn.fetchval("SELECT pg_total_relation_size($1)", table)
        sizes["usage_events"] = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'usage_events'::regclass"
        )
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'usage_events'::regclass"
        )
        version = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather")
        }
    finally:
        await conn.close()
    return {
        "rows": rows,
        "bytes": {k: int(v) for k, v in sizes.items()},
        "partitions": partitions,
        "postgres": version,
        "settings": settings,
    }


def machine() -> dict[str, str]:
    def run(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()  # noqa: S603

    memory = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]  # MemTotal, KiB
    return {
        "nproc": run("nproc"),
        "memory": f"{int(memory) / 2**20:.1f} GiB",
        "loadavg": load_average(),
        "python": platform.python_version(),
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "analytics_code": analytics_code(),
    }


def load_average() -> str:
    """Over 1, 5 and 15 minutes: other work on the machine shows here."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def analytics_code() -> str:
    """Which analytics code answered (it changes often): a digest of src/sluicegate/analytics
    and the time its newest file changed."""
    import sluicegate.analytics

    files = sorted(Path(sluicegate.analytics.__file__).parent.glob("*.py"))
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()[:12]
    newest = datetime.fromtimestamp(max(path.stat().st_mtime for path in files), UTC)
    return f"sha256 {digest}, newest file {newest:%Y-%m-%d %H:%M:%S} UTC"


# --- report ---------------------------------------------------------------------------------


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def markdown(report: dict[str, Any]) -> str:
    sizes, target, host = report["sizes"], report["target"], report["machine"]
    settings = ", ".join(f"{name} {value}" for name, value in sizes["settings"].items())
    lines = [
        f"`{report['command']}`, {host['date']}: {host['nproc']} CPUs, {host['memory']} RAM, "
        f"Python {host['python']}, Postgres {sizes['postgres']} ({settings}); load average "
        f"{host['loadavg']} before, {report['loadavg_after']} after; analytics code "
        f"{host['analytics_code']}.",
        "",
    ]
    if report["analytics_code_after"] != host["analytics_code"]:
        lines += [
            f"The analytics code changed while this ran ({report['analytics_code_after']} at "
            "the end): every figure here is of the code above, which the gateway and the "
            "trace loaded at the start.",
            "",
        ]
    lines += [
        f"Org `{target['org_id']}` ({target['zone']}), {target['first']} to {target['last']}; "
        f"up to {report['repeat']} repetitions (fewer past {report['budget']:.0f} s, at least "
        f"{MIN_REPEAT}) after {report['warmup']} warm-up, one at a time.",
        "",
        "| table | rows (this org) | size |",
        "| --- | ---: | ---: |",
    ]
    for table, count in sizes["rows"].items():
        size = sizes["bytes"].get(table)
        lines.append(f"| {table} | {count:,} | {mib(size) if size else ''} |")
    lines += [
        "",
        "| query | status | runs | p50 ms | p95 ms | max ms | gateway CPU ms/req "
        "| Postgres CPU ms/req | response | answer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for f in [Figures(**d) for d in report["queries"]]:
        if f.pending or f.status != 200:
            why = "pending: not served yet" if f.pending else f"{f.status}: {f.summary[:80]}"
            lines.append(f"| {f.name} | {why} | | | | | | | | |")
            continue
        answer = f.summary + (f"; {f.check}" if f.check else "")
        lines.append(
            f"| {f.name} | 200 | {f.repeat} | {f.cut(50):.0f} | {f.cut(95):.0f} "
            f"| {max(f.latencies_ms):.0f} | {f.gateway_cpu_ms:.0f} | {f.postgres_cpu_ms:.0f} "
            f"| {f.bytes / 1024:,.0f} KiB | {answer} |"
        )
    exports = [Export(**d) for d in report["exports"]]
    if exports:
        lines += [
            "",
            "| export | status | rows | size | time s | first byte s | gateway RSS before -> "
            "peak (VmHWM) | gateway CPU s | Postgres CPU s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
        ]
    for e in exports:
        if e.pending:
            lines.append(f"| {e.name} | pending: not served yet | | | | | | | |")
            continue
        lines.append(
            f"| {e.name} | {e.status}{'' if e.complete else ' incomplete'} | {e.rows:,} "
            f"| {e.bytes / 2**20:,.0f} MiB | {e.seconds:.1f} | {e.first_byte_s:.2f} "
            f"| {e.rss_before_mib:.0f} -> {e.rss_peak_mib:.0f} MiB ({e.hwm_mib:.0f}"
            f"{'' if e.hwm_reset else ', since start'}) | {e.gateway_cpu_s:.1f} "
            f"| {e.postgres_cpu_s:.1f} |"
        )
    traced = [x for x in report["explain"] if not x["name"].startswith("reference")]
    if traced:
        lines += [
            "",
            "| statement of the endpoint | ms in the service (first run) | EXPLAIN ANALYZE ms "
            "(custom plan) | generic plan ms | rows read | rows out | plan (custom) "
            "| plan (generic) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for x in traced:
            if "error" in x:
                lines.append(f"| {x['name']} | failed: {x['error'][:120]} | | | | | | |")
                continue
            lines.append(
                f"| {x['name']}: {statement_kind(x['sql'])} | {x['app_ms']:,.0f} | {x['ms']:,.0f} "
                f"| {x['generic_ms']:,.0f} | {x['rows_read']:,} | {x['rows_out']:,} "
                f"| {x['outline'][:300]} | {x['generic_outline'][:300]} |"
            )
    references = [x for x in report["explain"] if x["name"].startswith("reference")]
    if references:
        lines += [
            "",
            "| reference query (EXPLAIN ANALYZE, warm) | ms | rows read | rows out "
            "| buffers hit / read | plan |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for x in references:
            lines.append(
                f"| {x['name']} | {x['ms']:,.0f} | {x['rows_read']:,} | {x['rows_out']:,} "
                f"| {x['shared_hit']:,} / {x['shared_read']:,} | {x['outline'][:300]} |"
            )
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def queries(target: Target, other_zone: str) -> list[Figures]:
    org = f"{API}/orgs/{target.org_id}"
    year = {"from": target.first.isoformat(), "to": target.last.isoformat()}
    last_month = {"from": (target.last - timedelta(days=29)).isoformat(), "to": year["to"]}
    activity = f"{org}/analytics/activity"
    return [
        Figures("(a) activity by model, day, org zone", activity,
                year | {"groupBy": "model", "granularity": "day"}),
        Figures(f"(b) activity by model, day, {other_zone}", activity,
                year | {"groupBy": "model", "granularity": "day", "timezone": other_zone}),
        Figures("(c) members", f"{org}/analytics/members", year),
        Figures("(d) activity by member, month", activity,
                year | {"groupBy": "member", "granularity": "month"}),
        Figures("(d) activity by key, month", activity,
                year | {"groupBy": "key", "granularity": "month"}),
        Figures("feed: first page, newest", f"{org}/activity", {"limit": "50"}),
        Figures("ledger: first page", f"{org}/credits/ledger", {}),
        Figures("insights: anomalies, last 30 days", f"{org}/insights/anomalies", last_month),
        Figures("insights: summary, last 30 days", f"{org}/insights/summary", last_month),
    ]  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a database bench/generate_year.py filled")
    parser.add_argument("--info", type=Path, help="the generator's info file")
    parser.add_argument("--org", help="the org to read (default: from the info file)")
    parser.add_argument("--requests", type=int, default=1_000_000,
                        help="without --database-url: how many requests to generate")  # fmt: skip
    parser.add_argument("--full", action="store_true", help="generate 10M requests")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--warmup",
        type=int,
        default=GENERIC_AFTER,
        help="runs before measuring (default: the custom-plan executions of the statements)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=120.0,
        help="seconds per query: a slower one is repeated fewer times (at least 5)",
    )
    parser.add_argument("--other-zone", default="Asia/Kathmandu")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-explain", action="store_true")
    parser.add_argument("--output", type=Path, help="write the figures as JSON")
    return parser.parse_args()


def generated_database(args: argparse.Namespace) -> tuple[str, Path]:
    import generate_year

    name = f"sg_bench_analytics_{secrets.token_hex(4)}"
    info = Path(tempfile.gettempdir()) / f"{name}.json"
    requests = 10_000_000 if args.full else args.requests
    argv = ["--create-database", name, "--requests", str(requests), "--info", str(info)]
    url = with_database("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres", name)
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout is the report's
            status = generate_year.main(argv)
        if status != 0:
            raise SystemExit("the generated data failed its checks")
    except BaseException:  # main() drops only a database it was handed back
        asyncio.run(drop_database(url))
        info.unlink(missing_ok=True)
        raise
    return url, info


async def drop_database(url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(with_database(url, "postgres")))
    try:
        await conn.execute(
            f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)'
        )
    finally:
        await conn.close()


def database_ports(pid: int) -> list[int]:
    """The local ports of the process's TCP connections (its Postgres backends' client ports)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def cancel_queries(url: str, ports: list[int]) -> None:
    """Cancel what the stopped gateway's backends still run (an interrupted slow query)."""
    conn = await asyncpg.connect(asyncpg_dsn(with_database(url, "postgres")))
    try:
        await conn.execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND client_port = ANY($2::int[]) AND state = 'active'",
            urlsplit(url).path.lstrip("/"),
            ports,
        )
    finally:
        await conn.close()


def drop_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def main() -> int:
    args = parse_args()
    created = None
    url, info_path = args.database_url, args.info
    if url is None:
        url, info_path = generated_database(args)
        created = url
    info_path = info_path or default_info_path(url)
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    tmp = Path(tempfile.mkdtemp(prefix="sg-analytics-bench-"))
    prefix = f"bench-analytics-{secrets.token_hex(3)}"
    gateway = None
    try:
        target = asyncio.run(find_target(url, info, args.org))
        target.token = asyncio.run(owner_token(target))
        asyncio.run(expected_totals(target, args.other_zone))
        env = {
            "SLUICEGATE_DATABASE_URL": url,
            "SLUICEGATE_REDIS_URL": REDIS_URL,
            "SLUICEGATE_REDIS_PREFIX": prefix,
            "SLUICEGATE_SECRET_KEY": target.secret_key,
            "SLUICEGATE_MIGRATE_ON_START": "false",
            "SLUICEGATE_RUN_WORKER": "false",
            "SLUICEGATE_LOG_LEVEL": "warning",
        }
        # Imported with the gateway's start, as the gateway imports it: the statements traced
        # at the end are the ones the gateway sends, even if the analytics code is edited while
        # this runs (the report says when it was).
        importlib.import_module("sluicegate.analytics.service")
        before = machine()
        gateway = start_server("gateway", ["sluicegate", "serve"], env, tmp)
        backends = Backends(url)
        headers = {"authorization": f"Bearer {target.token}"}
        with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=600) as client:
            served = set(client.get("/openapi.json").json().get("paths", {}))
            results = []
            for figures in queries(target, args.other_zone):
                template = figures.path.replace(target.org_id, "{org_id}")
                if template not in served:
                    figures.pending = True
                    results.append(figures)
                    continue
                results.append(
                    measure(
                        client, gateway, backends, figures, args.warmup, args.repeat, args.budget
                    )
                )
            exports = []
            if not args.skip_export:
                year = {"from": target.first.isoformat(), "to": target.last.isoformat()}
                org = f"{API}/orgs/{target.org_id}"
                jobs = [
                    Export("activity feed (raw rows)", f"{org}/activity.csv", year),
                    Export("analytics/activity.csv, by model, day", f"{org}/analytics/activity.csv",
                           year | {"groupBy": "model", "granularity": "day"}),
                ]  # fmt: skip
                for job in jobs:
                    if job.path.replace(target.org_id, "{org_id}") not in served:
                        job.pending = True
                        exports.append(job)
                    else:
                        exports.append(export(client, gateway, backends, job))
        plans = []
        if not args.skip_explain:
            plans = asyncio.run(trace_endpoints(target, args.other_zone))
            plans += asyncio.run(explain_references(target, args.other_zone))
        report = {
            "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "machine": before,
            "target": {
                k: str(v) for k, v in asdict(target).items() if k not in ("token", "secret_key")
            },
            "sizes": asyncio.run(data_sizes(target)),
            "repeat": args.repeat,
            "warmup": args.warmup,
            "budget": args.budget,
            "loadavg_after": load_average(),
            "analytics_code_after": analytics_code(),
            "queries": [asdict(f) for f in results],
            "exports": [asdict(e) for e in exports],
            "explain": plans,
        }
        print(markdown(report))
        if args.output:
            args.output.write_text(json.dumps(report, indent=2, default=str))
    finally:
        if gateway is not None:
            ports = database_ports(gateway.process.pid) if gateway.process.poll() is None else []
            gateway.stop()
            if ports:
                asyncio.run(cancel_queries(url, ports))
        drop_redis_keys(prefix)
        if created:
            asyncio.run(drop_database(created))
            if info_path is not None and info_path.exists():
                info_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
