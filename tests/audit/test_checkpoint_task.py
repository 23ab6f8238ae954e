"""Checkpoints on a schedule: each chain that grew is signed, logged and raised as the
`audit.checkpoint` alert once per head, so copies leave the database as the trail grows."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from sluicegate.alerts.lifecycle import audit_checkpoint
from sluicegate.alerts.models import Alert
from sluicegate.audit.checkpoint_task import CheckpointTask
from sluicegate.audit.checkpoints import checkpoint_key, parse
from sluicegate.runtime import Runtime
from tests.audit.test_chain import append
from tests.factories import make_service_org


async def test_each_grown_chain_is_signed_logged_and_raised_once_per_head(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    org_id = (await make_service_org(runtime)).id
    secret = runtime.settings.secret
    task = CheckpointTask(runtime.sessions, runtime.clock, secret, 3600, announce=audit_checkpoint)
    with caplog.at_level(logging.INFO, logger="sluicegate.audit"):
        first = await task.run_once()
    ours = [parse(value, checkpoint_key(secret)) for value in first]
    assert [(c.chain, c.seq) for c in ours if c.chain == org_id] == [(org_id, 1)]
    logged = [r for r in caplog.records if getattr(r, "chain", None) == org_id]
    assert [r.checkpoint for r in logged] == [v for v in first if f":{org_id}:" in v]

    assert [v for v in await task.run_once() if f":{org_id}:" in v] == []  # nothing new
    await append(runtime, org_id, 2)
    again = [v for v in await task.run_once() if f":{org_id}:" in v]
    assert [parse(v, checkpoint_key(secret)).seq for v in again] == [3]

    async with runtime.sessions() as session:
        alerts = list(
            await session.scalars(
                select(Alert).where(Alert.org_id == org_id, Alert.event == "audit.checkpoint")
            )
        )
    assert sorted(alert.details["seq"] for alert in alerts) == [1, 3]
    assert {alert.details["checkpoint"] for alert in alerts} == {
        *ours_values(first, org_id),
        *again,
    }


def ours_values(values: list[str], org_id: str) -> list[str]:
    return [value for value in values if f":{org_id}:" in value]
