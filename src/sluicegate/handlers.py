"""Who hears which domain event (core/events.py): the wiring between a capability that announces
something happened and the capabilities above it that act on it. Read this file to see what a
change sets off beyond its own rows."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import lifecycle
from sluicegate.alerts.outbox import record_crossings
from sluicegate.core.events import EventHandlers
from sluicegate.guard.counters import GuardStore, credit_counter
from sluicegate.keys.events import KeyCreated, KeyDisabled
from sluicegate.metering.events import BudgetThresholdsCrossed
from sluicegate.metering.rollups import rebuild_daily_rollups
from sluicegate.orgs.events import (
    CreditEnforcementChanged,
    MemberJoined,
    MemberRemoved,
    OrgTimezoneChanged,
)


def event_handlers(counters: GuardStore) -> EventHandlers:
    handlers = EventHandlers()
    # Alerts: raised in the change's transaction, so an alert exists exactly when its cause does.
    handlers.on(KeyCreated, lifecycle.key_created)
    handlers.on(KeyDisabled, lifecycle.key_disabled)
    handlers.on(MemberJoined, lifecycle.member_joined)
    handlers.on(MemberRemoved, lifecycle.member_removed)
    handlers.on(BudgetThresholdsCrossed, _threshold_alerts)
    # Metering: the daily rollups are days in the org's timezone; the announcing flush holds the
    # org's row lock, so no usage batch sums a day in the old zone meanwhile.
    handlers.on(OrgTimezoneChanged, _rebuild_days)

    # The guard: while credit was not enforced, requests without any other guardrail never
    # touched the org's credit counter; drop it so it is rebuilt from the ledger when next needed.
    async def forget_credit_counter(event: CreditEnforcementChanged) -> None:
        await counters.forget([credit_counter(event.org_id).key])

    handlers.after_commit(CreditEnforcementChanged, forget_credit_counter)
    return handlers


async def _threshold_alerts(session: AsyncSession, event: BudgetThresholdsCrossed) -> None:
    await record_crossings(session, event.usage_events)


async def _rebuild_days(session: AsyncSession, event: OrgTimezoneChanged) -> None:
    await rebuild_daily_rollups(session, event.org_id, event.timezone)
