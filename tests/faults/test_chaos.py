"""The chaos suite (marker `chaos`): steady governed traffic on a two-worker gateway while, one
at a time, the usage worker and a gateway worker are killed with SIGKILL, Redis is flushed,
Redis is stopped and started again (failing closed, then open), Postgres refuses connections
and then hangs, and the upstream answers errors. After each: no call a client saw succeed
without exactly one usage row, no spend past the hard budget, `reconcile` clean
(tests/faults/chaos.py). bench/chaos.py runs the same with longer phases and more clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.chaos import Fault, Stage, Traffic, run_phase

pytestmark = pytest.mark.chaos

# Short phases: seconds of traffic before each fault, through it, and after it heals.
BEFORE, DURING, AFTER = 0.3, 1.0, 1.0


async def test_money_and_usage_hold_through_one_fault_after_another(
    postgres_url: str, fault_providers_file: Path, tmp_path: Path
) -> None:
    stage = Stage(tmp_path, postgres_url, fault_providers_file, hard_limit_calls=300)
    await stage.open()
    try:
        assert stage.hard is not None and stage.soft is not None
        gateway = stage.start_gateway()
        stage.start_worker()
        traffic = Traffic(gateway.base_url, [stage.hard.key, stage.soft.key])

        async def phase(name: str, fault: Fault | None, heal: Fault | None) -> dict:
            return await run_phase(
                stage, traffic, name, fault, heal, before=BEFORE, during=DURING, after=AFTER
            )

        figures = [
            await phase("steady", None, None),
            await phase("usage worker SIGKILLed", stage.kill_worker, stage.start_worker),
            await phase("a gateway worker SIGKILLed", stage.kill_a_gateway_worker, None),
            await phase("Redis flushed", stage.redis.flushall, None),
            await phase("Redis stopped (closed)", stage.redis.stop, stage.redis.start),
            await phase("Postgres refusing", stage.proxy.refuse, stage.proxy.heal),
            await phase("Postgres silent", stage.proxy.hang, stage.proxy.heal),
        ]

        def failing() -> None:
            traffic.failing = True

        def healthy() -> None:
            traffic.failing = False

        figures.append(await phase("upstream answering 500", failing, healthy))
        stage.mode = "open"
        traffic.base_url = stage.start_gateway().base_url
        figures.append(await phase("Redis stopped (open)", stage.redis.stop, stage.redis.start))
        print("\n".join(stage.log))
        assert all(f["succeeded"] > 0 for f in figures), figures
        statuses = [f["statuses"] for f in figures]
        assert any(402 in s for s in statuses), "the hard budget was never reached"
        assert 503 in statuses[4] and 502 in statuses[7], statuses
    finally:
        await stage.close()
