"""Reconciling the counters enforcement uses with the database: each budget counter of the current
period (and the credit counter, when credit is enforced) against what it would be rebuilt to,
the usage rows plus the charges still waiting in the org's usage stream. A counter that is not
kept at the moment is rebuilt when next used, so it cannot be wrong; a differing one is made
missing by the repair (its live reservations kept), so it is rebuilt from the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.money import nanos_to_usd
from sluicegate.guard.counters import BudgetCounter, CreditCounter, GuardStore, credit_counter
from sluicegate.guard.enforcer import seed_of
from sluicegate.guard.rules import budget_counter, load_org_rules
from sluicegate.metering.reconcile import Comparison
from sluicegate.orgs.models import Membership

Counter = BudgetCounter | CreditCounter


async def counters_of(session: AsyncSession, org_id: str, now: datetime) -> list[Counter]:
    """The org's counters of the current periods: each budget's (a default member budget's per
    member without one of their own), and the credit's when it is enforced."""
    rules = await load_org_rules(session, org_id)
    if rules is None:
        return []
    counters: list[Counter] = []
    own: set[tuple[str, str]] = set()
    for (scope_type, scope_id), budgets in sorted(rules.budgets.items()):
        for rule in budgets:
            counters.append(budget_counter(org_id, rule, scope_type, scope_id, rules.zone, now))
            if scope_type == "member":
                own.add((scope_id, rule.period))
    if rules.member_defaults:
        members = await session.scalars(
            select(Membership.user_id)
            .where(Membership.org_id == org_id, Membership.status == "active")
            .order_by(Membership.user_id)
        )
        for user_id in members:
            for rule in rules.member_defaults:
                if (user_id, rule.period) not in own:
                    counters.append(
                        budget_counter(org_id, rule, "member", user_id, rules.zone, now, user_id)
                    )
    if rules.credit_enforced:
        counters.append(credit_counter(org_id))
    return counters


async def compare_counters(
    session: AsyncSession, store: GuardStore, org_id: str, now: datetime
) -> tuple[Comparison, list[Counter]]:
    """The comparison, and the counters that differ (for the repair to make missing)."""
    comparison = Comparison("counters in Redis (budgets of this period, enforced credit)")
    counters = await counters_of(session, org_id, now)
    if not counters:
        return comparison, []
    values = await store.peek(counters)
    pending = await store.pending_charges(org_id)
    differing: list[Counter] = []
    for counter, value in zip(counters, values, strict=True):
        if value is None:
            continue  # not kept now: rebuilt from the database when next used
        comparison.checked += 1
        seed = await seed_of(session, counter, pending)
        expected = seed if isinstance(seed, int) else seed.balance
        if value.used != expected:
            comparison.differ(
                f"{_named(counter)}: {nanos_to_usd(value.used)} USD in Redis, "
                f"{nanos_to_usd(expected)} USD by the database"
            )
            differing.append(counter)
    return comparison, differing


def _named(counter: Counter) -> str:
    if isinstance(counter, CreditCounter):
        return "the credit's balance"
    spend = counter.spend
    period = f", period from {spend.start:%Y-%m-%d %H:%M} UTC" if spend.start is not None else ""
    return f"budget {counter.budget_id} ({spend.kind} {spend.id}{period}) spent"
