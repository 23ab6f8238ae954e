"""Rewriting the audit trail with nothing but write access to the database: what is caught by the
chain alone (keyed links, a sealed head), what only a checkpoint kept outside the database
catches (a whole state of the past restored), and the commands that take and compare
checkpoints."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update

from sluicegate.audit.chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    OPTIONAL_HASHED_FIELDS,
    UNKEYED,
    link_hash,
)
from sluicegate.audit.checkpoints import Checkpoint, checkpoint_key, sign
from sluicegate.audit.models import AuditEvent, AuditHead
from sluicegate.audit.service import ChainReport, checkpoint_of, verify_chain
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.audit.test_chain import append
from tests.conftest import settings_env
from tests.factories import make_service_org
from tests.support import run_cli


async def events_of(runtime: Runtime, org_id: str) -> list[AuditEvent]:
    async with runtime.sessions() as session:
        return list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.seq)
            )
        )


async def report(runtime: Runtime, org_id: str, *checkpoints: Checkpoint) -> ChainReport:
    async with runtime.sessions() as session:
        return await verify_chain(session, org_id, checkpoints)


async def checkpoint(runtime: Runtime, org_id: str) -> Checkpoint:
    async with runtime.sessions() as session:
        return await checkpoint_of(session, org_id, datetime.now(UTC))


async def test_deleting_the_last_events_and_the_head_is_detected(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 5)
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.seq > 4)
        )
        await session.execute(delete(AuditHead).where(AuditHead.org_id == org_id))
    found = await report(runtime, org_id)
    assert not found.intact
    assert "head is missing" in (found.problem or "")


async def test_moving_the_head_back_to_a_state_it_never_had_sealed_is_detected(
    runtime: Runtime,
) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 5)
    kept = (await events_of(runtime, org_id))[3]
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.seq > kept.seq)
        )
        await session.execute(
            update(AuditHead).where(AuditHead.org_id == org_id).values(seq=kept.seq, hash=kept.hash)
        )
    found = await report(runtime, org_id)
    assert not found.intact
    assert "seal does not match" in (found.problem or "")


def fields_of(event: AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in HASHED_FIELDS + OPTIONAL_HASHED_FIELDS}


async def rehash_unkeyed(runtime: Runtime, org_id: str, first_seq: int, **edit: Any) -> None:
    """Edit event #first_seq and recompute every link from there on the way anyone can: unkeyed
    SHA-256, the head moved to the new last hash."""
    events = await events_of(runtime, org_id)
    previous = GENESIS_HASH if first_seq == 1 else events[first_seq - 2].hash
    async with runtime.sessions() as session, session.begin():
        for event in events[first_seq - 1 :]:
            fields = fields_of(event)
            if event.seq == first_seq:
                fields.update(edit)
            digest = link_hash(previous, fields, UNKEYED)
            await session.execute(
                update(AuditEvent)
                .where(AuditEvent.id == event.id)
                .values(**edit if event.seq == first_seq else {}, prev_hash=previous, hash=digest)
                .values(hash_version=UNKEYED)
            )
            previous = digest
        await session.execute(
            update(AuditHead).where(AuditHead.org_id == org_id).values(hash=previous)
        )


async def test_an_edit_relinked_from_there_is_detected_where_it_starts(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 5)
    victim = (await events_of(runtime, org_id))[2]
    await rehash_unkeyed(runtime, org_id, victim.seq, target_id="key_forged")
    found = await report(runtime, org_id)
    assert not found.intact
    assert (found.broken_event_id, found.broken_seq) == (victim.id, victim.seq)


async def test_a_chain_rewritten_whole_in_the_unkeyed_form_is_detected(runtime: Runtime) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 3)
    await rehash_unkeyed(runtime, org_id, 1, actor_user_id="usr_forged")
    # Every link now fits the unkeyed form: only the head's seal says it is not ours.
    found = await report(runtime, org_id)
    assert not found.intact
    assert "seal does not match" in (found.problem or "")


async def test_a_past_state_restored_whole_passes_alone_and_a_checkpoint_catches_it(
    runtime: Runtime,
) -> None:
    """The limit of a database-only check: the head row of an earlier moment, saved and put
    back after deleting what came since, is a state the chain really had. A checkpoint taken
    later, kept outside the database, shows what is missing."""
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 3)
    async with runtime.sessions() as session:
        saved = await session.get(AuditHead, org_id)
        assert saved is not None
        saved_row = (saved.seq, saved.hash, saved.mac)
    await append(runtime, org_id, 3)
    later = await checkpoint(runtime, org_id)
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.seq > saved_row[0])
        )
        await session.execute(
            update(AuditHead)
            .where(AuditHead.org_id == org_id)
            .values(seq=saved_row[0], hash=saved_row[1], mac=saved_row[2])
        )
    assert (await report(runtime, org_id)).intact
    caught = await report(runtime, org_id, later)
    assert not caught.intact
    assert caught.problem is not None and caught.problem.startswith("truncated")
    assert f"saw {later.seq} events, {saved_row[0]} remain" in caught.problem


async def test_a_checkpoint_of_an_intact_chain_verifies_and_one_of_another_history_does_not(
    runtime: Runtime,
) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 2)
    first = await checkpoint(runtime, org_id)
    await append(runtime, org_id, 2)
    assert (await report(runtime, org_id, first, await checkpoint(runtime, org_id))).intact
    other = Checkpoint(org_id, first.seq, hashlib.sha256(b"another").hexdigest(), first.taken_at)
    found = await report(runtime, org_id, other)
    assert found.problem is not None and found.problem.startswith("rewritten")


async def test_the_cli_signs_checkpoints_and_verify_compares_with_them(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    org_id = (await make_service_org(runtime)).id
    await append(runtime, org_id, 2)
    env = settings_env(settings)
    taken = run_cli("audit", "checkpoint", "--org", org_id, env=env, cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr
    value = taken.stdout.strip()
    assert value.startswith(f"sgcp1:{org_id}:3:")
    fine = run_cli("audit", "verify", "--org", org_id, "--checkpoint", value, env=env, cwd=tmp_path)
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert "database: " in fine.stderr and "secret key: " in fine.stderr
    assert "intact (3 events, as 1 checkpoint(s) saw it)" in fine.stdout

    # A log file with the checkpoint somewhere in a line; then the last event deleted, and
    # the head put back on the remaining one with a seal it once really had.
    log = tmp_path / "gateway.log"
    log.write_text(f'{{"message": "audit checkpoint", "checkpoint": "{value}"}}\n')
    async with runtime.sessions() as session, session.begin():
        await session.execute(
            delete(AuditEvent).where(AuditEvent.org_id == org_id, AuditEvent.seq == 3)
        )
    broken = run_cli("audit", "verify", "--org", org_id, "--checkpoint", str(log), env=env)
    assert broken.returncode == 1
    assert "broken" in broken.stdout

    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    refused = run_cli("audit", "verify", "--org", org_id, "--checkpoint", forged, env=env)
    assert refused.returncode == 1 and "not valid" in refused.stderr


async def test_checkpoint_all_signs_every_chain_and_refuses_a_moved_head(
    runtime: Runtime, settings: Settings, tmp_path: Path
) -> None:
    org_id = (await make_service_org(runtime)).id
    env = settings_env(settings)
    # Other tests of this database tamper with their chains: those are named, ours is signed.
    everything = run_cli("audit", "checkpoint", "--all", env=env, cwd=tmp_path)
    assert (
        sign(await checkpoint(runtime, org_id), checkpoint_key(settings.secret)).rsplit(":", 2)[0]
        in everything.stdout
    )
    async with runtime.sessions() as session, session.begin():
        await session.execute(update(AuditHead).where(AuditHead.org_id == org_id).values(seq=9))
    moved = run_cli("audit", "checkpoint", "--org", org_id, env=env, cwd=tmp_path)
    assert moved.returncode == 1 and "not sealed" in moved.stderr
