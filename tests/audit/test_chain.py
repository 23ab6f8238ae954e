"""The audit chain: appended in the mutation's transaction, one line under concurrency, and any
edit made behind its back is found and named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select, update

from sluicegate.audit.chain import REDACTED
from sluicegate.audit.models import PLATFORM_CHAIN, AuditEvent
from sluicegate.audit.service import RequestMeta, record, verify_chain
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import settings_env
from tests.factories import make_service_org
from tests.support import run_cli


async def append(runtime: Runtime, org_id: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        async with runtime.unit_of_work() as session:
            event = await record(
                session,
                org_id=org_id,
                actor_user_id="usr_x",
                action="key.update",
                target_type="api_key",
                target_id=f"key_{i}",
                before={"name": "old", "status": "active"},
                after={"name": f"new {i}", "status": "disabled", "key": "sk-sg-secret"},
                meta=RequestMeta(ip="203.0.113.7", user_agent="pytest", request_id=f"req_{i}"),
            )
            ids.append(event.id)
    return ids


async def test_an_untouched_chain_verifies(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 5)
    async with runtime.sessions() as session:
        report = await verify_chain(session, org_id)
    # The org's creation is the chain's first event.
    assert report.intact and report.checked == 6


async def test_secrets_never_enter_the_trail(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 1)
    async with runtime.sessions() as session:
        event = await session.scalar(
            select(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.action == "key.update")
        )
    assert event is not None and event.after["key"] == REDACTED
    assert (event.ip, event.user_agent, event.request_id) == ("203.0.113.7", "pytest", "req_0")


async def test_a_rolled_back_mutation_leaves_no_event(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    with pytest.raises(RuntimeError):
        async with runtime.unit_of_work() as session:
            await record(
                session,
                org_id=org_id,
                actor_user_id=None,
                action="group.create",
                target_type="group",
                target_id="grp_x",
            )
            raise RuntimeError("the mutation failed")
    await append(runtime, org_id, 1)
    async with runtime.sessions() as session:
        report = await verify_chain(session, org_id)
    assert report.intact and report.checked == 2


@pytest.mark.parametrize("column", ["after", "action", "created_at", "hash"])
async def test_editing_one_row_with_sql_is_reported_at_that_row(
    runtime: Runtime, column: str
) -> None:
    org_id = (await make_service_org(runtime)).id
    ids = await append(runtime, org_id, 6)
    victim = ids[3]
    async with runtime.sessions() as session, session.begin():
        row = await session.get(AuditEvent, victim)
        assert row is not None
        changes = {
            "after": {"name": "forged"},
            "action": "key.create",
            "created_at": row.created_at.replace(year=2020),
            "hash": "f" * 64,
        }
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == victim).values({column: changes[column]})
        )
    async with runtime.sessions() as session:
        report = await verify_chain(session, org_id)
    assert not report.intact
    assert (report.broken_event_id, report.broken_seq, report.checked) == (victim, 5, 4)


async def test_deleting_a_row_is_reported(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    ids = await append(runtime, org_id, 4)
    async with runtime.sessions() as session, session.begin():
        await session.execute(AuditEvent.__table__.delete().where(AuditEvent.id == ids[1]))
    async with runtime.sessions() as session:
        report = await verify_chain(session, org_id)
    assert (report.broken_event_id, report.checked) == (ids[2], 2)


async def test_concurrent_writers_keep_one_unbroken_line(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id

    async def one(i: int) -> None:
        async with runtime.unit_of_work() as session:
            await record(
                session,
                org_id=org_id,
                actor_user_id=None,
                action="member.join",
                target_type="user",
                target_id=f"usr_{i}",
            )

    await asyncio.gather(*(one(i) for i in range(20)))
    async with runtime.sessions() as session:
        report = await verify_chain(session, org_id)
        seqs = list(
            await session.scalars(
                select(AuditEvent.seq).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
            )
        )
    assert report.intact
    assert seqs == list(range(1, 22))


async def test_cli_verify_names_the_broken_event(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    org_id = (await make_service_org(runtime)).id
    ids = await append(runtime, org_id, 3)
    env = settings_env(settings)
    intact = run_cli("audit", "verify", "--org", org_id, env=env, cwd=tmp_path)
    assert intact.returncode == 0, intact.stderr
    assert "intact (4 events)" in intact.stdout
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            update(AuditEvent).where(AuditEvent.id == ids[1]).values(target_id="key_forged")
        )
    broken = run_cli("audit", "verify", "--org", org_id, env=env, cwd=tmp_path)
    assert broken.returncode == 1
    assert f"broken at event {ids[1]} (#3)" in broken.stdout
    unknown = run_cli("audit", "verify", "--org", "org_missing", env=env, cwd=tmp_path)
    assert unknown.returncode == 1 and "no organization org_missing" in unknown.stderr


async def test_cli_verifies_the_platform_chain(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    async with runtime.unit_of_work() as session:
        await record(
            session,
            org_id=PLATFORM_CHAIN,
            actor_user_id=None,
            action="user.freeze",
            target_type="user",
            target_id="usr_someone",
        )
    result = run_cli("audit", "verify", "--platform", env=settings_env(settings), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "audit chain of the platform: intact" in result.stdout
    both = run_cli("audit", "verify", "--platform", "--org", "org_x", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
