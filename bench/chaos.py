"""The chaos suite's long form: the phases of tests/faults/test_chaos.py (the same harness,
tests/faults/chaos.py), with more clients, longer phases and each fault several times, on a
fresh Postgres database, a Redis of its own with an append-only file, two gateway workers and a
separate usage worker. After every phase the books are checked as in the suite (no successful
call without exactly one usage row, the hard budget never exceeded, reconcile clean); the
figures of each phase are printed as a Markdown table.

Run from the repository root (it needs Postgres on 127.0.0.1:5432 and redis-server on PATH):

    python bench/chaos.py [--rounds 3] [--clients 8] [--during 10] > bench/results/chaos.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import POSTGRES_ADMIN_DSN, asyncpg_url  # noqa: E402
from tests.faults.chaos import Stage, Traffic, run_phase  # noqa: E402
from tests.proxy.conftest import providers_yaml  # noqa: E402
from tests.support import free_port, start_process  # noqa: E402

from sluicegate.core.db import make_engine  # noqa: E402
from sluicegate.migrate import upgrade  # noqa: E402


async def database() -> str:
    name = f"sluicegate_chaos_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = asyncpg_url(name)
    engine = make_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    return name


async def drop(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sluicegate-chaos-"))
    port = free_port()
    mock = start_process(
        ["sluicegate.mockupstream", "--port", str(port)],
        port=port,
        log_path=folder / "mock.log",
        ready_path="/health",
    )
    providers = folder / "providers.yaml"
    providers.write_text(providers_yaml(mock.base_url))
    name = await database()
    stage = Stage(folder, asyncpg_url(name), providers, hard_limit_calls=args.hard_calls)
    started = time.monotonic()
    figures: list[dict[str, object]] = []
    try:
        await stage.open()
        assert stage.hard is not None and stage.soft is not None
        gateway = stage.start_gateway()
        stage.start_worker()
        traffic = Traffic(gateway.base_url, [stage.hard.key, stage.soft.key], args.clients)
        timing = {"before": args.before, "during": args.during, "after": args.after}

        def failing() -> None:
            traffic.failing = True

        def healthy() -> None:
            traffic.failing = False

        phases = [
            ("usage worker SIGKILLed", stage.kill_worker, stage.start_worker),
            ("a gateway worker SIGKILLed", stage.kill_a_gateway_worker, None),
            ("Redis flushed", stage.redis.flushall, None),
            ("Redis stopped (closed)", stage.redis.stop, stage.redis.start),
            ("Postgres refusing", stage.proxy.refuse, stage.proxy.heal),
            ("Postgres silent", stage.proxy.hang, stage.proxy.heal),
            ("upstream answering 500", failing, healthy),
        ]
        figures.append(await run_phase(stage, traffic, "steady", None, None, **timing))
        for _ in range(args.rounds):
            for label, fault, heal in phases:
                figures.append(await run_phase(stage, traffic, label, fault, heal, **timing))
        stage.mode = "open"
        traffic.base_url = stage.start_gateway().base_url
        for _ in range(args.rounds):
            figures.append(
                await run_phase(
                    stage,
                    traffic,
                    "Redis stopped (open)",
                    stage.redis.stop,
                    stage.redis.start,
                    **timing,
                )
            )
    finally:
        await stage.close()
        mock.stop()
        await drop(name)
    report(args, figures, time.monotonic() - started)


def report(args: argparse.Namespace, figures: list[dict[str, object]], seconds: float) -> None:
    print("# Chaos: money and usage under faults\n")
    print(
        f"`python bench/chaos.py --rounds {args.rounds} --clients {args.clients} "
        f"--before {args.before:g} --during {args.during:g} --after {args.after:g}` on "
        f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, Python "
        f"{platform.python_version()}; {seconds:.0f} s in all. Every phase below passed its "
        "checks: every call a client saw succeed has exactly one usage row, the key under a "
        f"hard budget of {args.hard_calls} calls never spent more, `reconcile` clean.\n"
    )
    print("| phase | calls | succeeded | cut | answers | hard budget spent (calls) |")
    print("| --- | ---: | ---: | ---: | --- | ---: |")
    for figure in figures:
        answers = ", ".join(f"{k}: {v}" for k, v in figure["statuses"].items())  # type: ignore[attr-defined]
        print(
            f"| {figure['phase']} | {figure['calls']} | {figure['succeeded']} | "
            f"{figure['cut']} | {answers} | {figure['hard_spent_calls']} |"
        )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="times each fault is injected")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--before", type=float, default=3.0, help="seconds before each fault")
    parser.add_argument("--during", type=float, default=10.0, help="seconds of each fault")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after it heals")
    parser.add_argument("--hard-calls", type=int, default=5000, help="calls the hard budget fits")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(arguments()))
