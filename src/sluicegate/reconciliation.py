"""`sluicegate reconcile`: recompute from the usage rows everything derived from them (the ledger's
usage debits, the 15-minute, daily and org-wide daily rollups: metering/reconcile.py) and the
counters enforcement uses (budget spend and the enforced credit in Redis: guard/reconcile.py),
print each comparison, and name the first mismatch. Read-only unless `repair`: then each org's
derived rows are rebuilt from its usage rows in one transaction, audited as
`usage.reconcile_repair`, and the counters that differed are rebuilt when next used."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record
from sluicegate.core.money import nanos_to_usd
from sluicegate.guard.counters import CounterStoreUnavailable
from sluicegate.guard.reconcile import compare_counters
from sluicegate.metering.partitions import month_of, months_before
from sluicegate.metering.reconcile import (
    Comparison,
    Window,
    compare,
    expected_of,
    repair_org,
    window_of,
)
from sluicegate.orgs.models import Organization
from sluicegate.runtime import Runtime

Print = Callable[[str], None]


def earliest_kept(now: datetime, retention_months: int) -> datetime | None:
    """The first moment whose usage rows the retention keeps (None: all are kept)."""
    if retention_months <= 0:
        return None
    first = months_before(month_of(now), retention_months)
    return datetime.combine(first, datetime.min.time(), UTC)


async def reconcile(
    runtime: Runtime, org_id: str | None, since: date | None, repair: bool, say: Print
) -> str | None:
    """Reconcile one org or all of them; the first mismatch left (None: all agree)."""
    now = runtime.clock.now()
    start = datetime.combine(since, datetime.min.time(), UTC) if since is not None else None
    kept = earliest_kept(now, runtime.settings.usage_retention_months)
    if kept is not None and (start is None or start < kept):
        say(f"usage rows before {kept:%Y-%m-%d} are past the retention: checking from there")
        start = kept
    async with runtime.sessions() as session:
        if org_id is not None:
            org_ids = [org_id]
        else:
            org_ids = list(await session.scalars(select(Organization.id).order_by(Organization.id)))
    first: str | None = None
    for org in org_ids:
        async with runtime.sessions() as session:
            window = await window_of(session, org, start)
        if window is None:
            return f"no organization {org}"
        problem = await _check(runtime, window, say)
        if problem is not None and repair:
            await _repair(runtime, window, say)
            problem = await _check(runtime, window, say, again=True)
        first = first or problem
    return first


async def _check(
    runtime: Runtime, window: Window, say: Print, *, again: bool = False
) -> str | None:
    async with runtime.sessions() as session:
        expected = await expected_of(session, window)
        comparisons = await compare(session, window, expected)
        counters = await _counters(runtime, session, window)
    since = f" since {window.since:%Y-%m-%d}" if window.since is not None else ""
    head = "after the repair: " if again else ""
    say(
        f"{head}{window.org_id} ({window.zone}): {expected.rows} usage rows{since}, "
        f"{nanos_to_usd(expected.cost)} USD"
    )
    first = None
    for comparison in [*comparisons, counters]:
        if comparison.ok:
            say(f"  ok        {comparison.what}: {comparison.checked} compared")
            continue
        say(f"  MISMATCH  {comparison.what}: {comparison.differing} of {comparison.checked} differ")
        for line in comparison.mismatches:
            say(f"            {line}")
        first = first or f"{window.org_id}: {comparison.what}: {comparison.mismatches[0]}"
    return first


async def _counters(runtime: Runtime, session: AsyncSession, window: Window) -> Comparison:
    if runtime.redis is None:
        # Embedded: the counters live in the serving process, which rebuilds them itself.
        return Comparison("counters (in the serving process, embedded: not checked)")
    try:
        comparison, _ = await compare_counters(
            session, runtime.counters, window.org_id, runtime.clock.now()
        )
    except CounterStoreUnavailable as exc:
        comparison = Comparison("counters in Redis")
        comparison.differ(f"Redis cannot be read: {exc}")
    return comparison


async def _repair(runtime: Runtime, window: Window, say: Print) -> None:
    """Rebuild the window's derived rows (one transaction, audited), then the counters."""
    async with runtime.unit_of_work() as session:
        expected = await repair_org(session, window)
        await record(
            session,
            org_id=window.org_id,
            actor_user_id=None,
            action="usage.reconcile_repair",
            target_type="organization",
            target_id=window.org_id,
            after={
                "since": window.since.isoformat() if window.since is not None else None,
                "usage_rows": expected.rows,
                "cost_usd": nanos_to_usd(expected.cost),
                "rebuilt": [
                    "ledger usage debits",
                    "usage_rollups",
                    "usage_daily_rollups",
                    "usage_org_daily_rollups",
                ],
            },
        )
    say(f"repaired {window.org_id}: derived rows rebuilt from {expected.rows} usage rows")
    if runtime.redis is not None:
        async with runtime.sessions() as session:
            _, differing = await compare_counters(
                session, runtime.counters, window.org_id, runtime.clock.now()
            )
        if differing:
            await runtime.counters.unseed(differing)
            say(f"repaired {window.org_id}: {len(differing)} counters rebuilt when next used")
