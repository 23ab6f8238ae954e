"""`sluicegate reconcile`: after real traffic everything derived from the usage rows agrees with
them; a corrupted rollup row, ledger debit or counter is named and the command exits 1;
`--repair` rebuilds it from the usage rows (audited), and a second run is clean."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import select, text

from sluicegate.audit.models import AuditEvent
from sluicegate.audit.service import verify_chain
from sluicegate.guard.reconcile import counters_of
from sluicegate.metering.models import UsageRollup
from sluicegate.providers.config import ProviderSettings
from sluicegate.settings import Settings
from tests.conftest import make_settings, settings_env
from tests.faults.conftest import (
    CHAT,
    COST,
    books_when,
    chat_body,
    in_process_gateway,
    tenant_with_budget,
)
from tests.support import run_cli

CALLS = 6


@pytest.fixture
def fault_settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """The backend's settings, on a Redis prefix of this test alone (its counters are read)."""
    if backend == "postgres":
        return make_settings(
            database_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=f"{request.getfixturevalue('redis_prefix')}:rec{secrets.token_hex(4)}",
        )
    return make_settings(database_url=request.getfixturevalue("sqlite_url"))


def reconcile(settings: Settings, org_id: str, *more: str) -> tuple[int, str, str]:
    done = run_cli("reconcile", "--org", org_id, *more, env=settings_env(settings))
    return done.returncode, done.stdout, done.stderr


async def test_reconcile_names_a_corrupted_rollup_row_and_repair_rebuilds_it(
    fault_settings: Settings, provider_settings: ProviderSettings, tmp_path: Path
) -> None:
    async with in_process_gateway(fault_settings, provider_settings) as (client, runtime):
        tenant = (await tenant_with_budget(runtime, 100 * COST)).tenant
        for _ in range(CALLS):
            answer = await client.post(
                CHAT, json=chat_body(), headers={"authorization": f"Bearer {tenant.key}"}
            )
            assert answer.status_code == 200
        books = await books_when(runtime, tenant.org_id, lambda b: b.rows == CALLS)
        assert books.rows == CALLS

        code, out, err = reconcile(fault_settings, tenant.org_id)
        assert code == 0, out + err
        assert "database: " in err and "secret key: " in err  # where it looked, said first
        assert "MISMATCH" not in out and f"{CALLS} usage rows" in out

        async with runtime.sessions() as session, session.begin():
            bucket = await session.scalar(
                select(UsageRollup.bucket_start).where(UsageRollup.org_id == tenant.org_id)
            )
            await session.execute(
                text(
                    "UPDATE usage_rollups SET cost_nusd = cost_nusd + 7, requests = requests + 1 "
                    "WHERE org_id = :org"
                ),
                {"org": tenant.org_id},
            )
            await session.execute(
                text(
                    "UPDATE ledger_entries SET amount_nusd = amount_nusd - 5 "
                    "WHERE org_id = :org AND kind = 'usage'"
                ),
                {"org": tenant.org_id},
            )
        code, out, err = reconcile(fault_settings, tenant.org_id)
        assert code == 1, out + err
        assert "MISMATCH  15-minute rollups (usage_rollups): 1 of 1 differ" in out
        assert "MISMATCH  ledger usage debits" in out
        assert "first mismatch" in err and tenant.org_id in err and tenant.key_id in out
        assert bucket is not None
        assert bucket.strftime("%Y-%m-%dT%H:%MZ") in out  # named by its bucket and dimensions

        code, out, err = reconcile(fault_settings, tenant.org_id, "--repair")
        assert code == 0, out + err
        assert f"repaired {tenant.org_id}" in out
        code, out, err = reconcile(fault_settings, tenant.org_id)
        assert code == 0 and "MISMATCH" not in out, out + err
        async with runtime.sessions() as session:
            books = await books_when(runtime, tenant.org_id, lambda b: True)
            repaired = await session.scalar(
                select(AuditEvent).where(
                    AuditEvent.org_id == tenant.org_id,
                    AuditEvent.action == "usage.reconcile_repair",
                )
            )
            chain = await verify_chain(session, tenant.org_id)
        books.assert_consistent()
        assert books.cost_nusd == CALLS * COST
        assert repaired is not None and repaired.after["usage_rows"] == CALLS
        assert chain.intact


async def test_reconcile_finds_a_counter_that_drifted_and_repair_rebuilds_it(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    provider_settings: ProviderSettings,
) -> None:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{redis_prefix}:drift{secrets.token_hex(4)}",
    )
    async with in_process_gateway(settings, provider_settings) as (client, runtime):
        tenant = (await tenant_with_budget(runtime, 100 * COST)).tenant
        for _ in range(3):
            answer = await client.post(
                CHAT, json=chat_body(), headers={"authorization": f"Bearer {tenant.key}"}
            )
            assert answer.status_code == 200
        await books_when(runtime, tenant.org_id, lambda b: b.rows == 3)
        async with runtime.sessions() as session:
            [counter] = await counters_of(session, tenant.org_id, runtime.clock.now())
        assert runtime.redis is not None
        await runtime.redis.hincrby(f"{settings.redis_prefix}:{counter.key}", "s", 5)

        code, out, err = reconcile(settings, tenant.org_id)
        assert code == 1, out + err
        assert "MISMATCH  counters in Redis" in out and counter.budget_id in out

        code, out, err = reconcile(settings, tenant.org_id, "--repair")
        assert code == 0, out + err
        [value] = await runtime.counters.peek([counter])
        assert value is None  # made missing: rebuilt from the database when next used
        answer = await client.post(
            CHAT, json=chat_body(), headers={"authorization": f"Bearer {tenant.key}"}
        )
        assert answer.status_code == 200
        await books_when(runtime, tenant.org_id, lambda b: b.rows == 4)
        code, out, err = reconcile(settings, tenant.org_id)
        assert code == 0, out + err
        [value] = await runtime.counters.peek([counter])
        assert value is not None and value.used == 4 * COST
