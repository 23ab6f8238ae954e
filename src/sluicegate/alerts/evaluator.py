"""The alerts that are conditions rather than moments, evaluated every EVALUATE_SECONDS by each
worker: `credit.low` (balance under an amount, or runway under N days at the last week's burn),
`guardrail.blocked` (at least N refused requests within a window), `anomaly.detected` (today's
spend of a member, key or model an outlier, analytics/insights.py) and the scan for expired keys.

Any number of workers may evaluate at once: each alert's dedupe key says when it may fire again,
so they raise it once between them:
- credit.low: once per rule until the next top-up or adjustment (the ledger's count of
  non-usage entries is part of the key), so a low balance is announced once, not every minute;
- guardrail.blocked: once per rule and window (windows are aligned to the epoch);
- anomaly.detected: once per rule, dimension, member/key/model and day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from fractions import Fraction

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.alerts import outbox_repository as repository
from sluicegate.alerts.lifecycle import keys_expired
from sluicegate.alerts.models import AlertRule
from sluicegate.alerts.outbox import AlertDraft, raise_alert
from sluicegate.analytics.insights import org_anomalies_today
from sluicegate.core.clock import Clock
from sluicegate.core.logs import log_failure
from sluicegate.core.money import nanos_to_usd, usd_to_nanos
from sluicegate.guard.counters import credit_counter
from sluicegate.guard.enforcer import seed_of

EVALUATE_SECONDS = 30.0
# The burn rate behind a runway is the average daily spend of the last BURN_DAYS.
BURN_DAYS = 7
CONDITION_EVENTS = ("credit.low", "guardrail.blocked", "anomaly.detected")

log = logging.getLogger("sluicegate.alerts")


class AlertEvaluator:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="alert-evaluator")

    async def close(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.evaluate()
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "alert evaluation failed; retrying next round", exc)
            except Exception:
                log.exception("alert evaluation failed unexpectedly; retrying next round")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), EVALUATE_SECONDS)

    async def evaluate(self) -> int:
        """One round: every condition rule and the expired keys; how many alerts were new."""
        now = self._clock.now()
        async with self._sessions() as session, session.begin():
            raised = await keys_expired(session, now)
        async with self._sessions() as session:
            rules = await repository.rules_of_events(session, CONDITION_EVENTS)
        for rule in rules:
            check = CHECKS[rule.event]
            try:
                async with self._sessions() as session, session.begin():
                    raised += await check(session, rule, now)
            except (SQLAlchemyError, OSError):
                log.warning("could not evaluate an alert rule", extra={"rule_id": rule.id})
        return raised


async def _scope_path(session: AsyncSession, rule: AlertRule) -> str | None:
    if rule.scope_group_id is None:
        return None
    return (await repository.group_paths(session, rule.org_id, [rule.scope_group_id])).get(
        rule.scope_group_id
    )


async def check_credit_low(session: AsyncSession, rule: AlertRule, now: datetime) -> int:
    seed = await seed_of(session, credit_counter(rule.org_id))
    assert not isinstance(seed, int)
    params = rule.params or {}
    balance = seed.balance
    below = params.get("below_usd")
    burn = await repository.usage_cost_since(session, rule.org_id, now - timedelta(days=BURN_DAYS))
    daily = Fraction(burn, BURN_DAYS)
    runway = Fraction(max(balance, 0)) / daily if daily > 0 else None
    reasons = []
    if below is not None and balance < usd_to_nanos(below):
        reasons.append(f"the balance is under ${below}")
    limit_days = params.get("runway_days")
    if limit_days is not None and runway is not None and runway < limit_days:
        reasons.append(f"at the last {BURN_DAYS} days' burn it lasts {float(runway):.1f} days")
    if not reasons:
        return 0
    balance_usd = nanos_to_usd(balance)
    draft = AlertDraft(
        org_id=rule.org_id,
        event="credit.low",
        dedupe_key=f"credit.low:{rule.id}:{seed.version}",
        rule_id=rule.id,
        severity="critical" if balance <= 0 else "warning",
        title="Credit balance low",
        group_id=rule.scope_group_id,
        text=f"The organization's credit balance is ${balance_usd}: {'; '.join(reasons)}.",
        occurred_at=now,
        fields=(
            ("Balance", f"${balance_usd}"),
            ("Daily burn", f"${nanos_to_usd(round(daily))}"),
            ("Runway", "-" if runway is None else f"{float(runway):.1f} days"),
        ),
        details={
            "balance_usd": balance_usd,
            "daily_burn_usd": nanos_to_usd(round(daily)),
            "runway_days": None if runway is None else round(float(runway), 2),
            "below_usd": below,
            "rule_runway_days": limit_days,
        },
    )
    return await _raised(session, draft)


async def check_guardrail_blocked(session: AsyncSession, rule: AlertRule, now: datetime) -> int:
    params = rule.params or {}
    window = timedelta(minutes=int(params["window_minutes"]))
    count = await repository.blocked_since(
        session, rule.org_id, now - window, await _scope_path(session, rule)
    )
    if count < int(params["count"]):
        return 0
    index = int(now.timestamp() // window.total_seconds())
    draft = AlertDraft(
        org_id=rule.org_id,
        event="guardrail.blocked",
        dedupe_key=f"guardrail.blocked:{rule.id}:{index}",
        rule_id=rule.id,
        severity="warning",
        title=f"{count} requests blocked by guardrails",
        text=(
            f"{count} requests were refused by budgets, rate limits or policies in the last "
            f"{params['window_minutes']} minutes (the rule's threshold is {params['count']})."
        ),
        occurred_at=now,
        group_id=rule.scope_group_id,
        fields=(("Blocked", str(count)), ("Window", f"{params['window_minutes']} min")),
        details={"blocked": count, "window_minutes": params["window_minutes"]},
    )
    return await _raised(session, draft)


async def check_anomalies(session: AsyncSession, rule: AlertRule, now: datetime) -> int:
    org = await repository.organization(session, rule.org_id)
    if org is None or org.deleted_at is not None:
        return 0
    report = await org_anomalies_today(session, rule.org_id, org.timezone, now)
    raised = 0
    for anomaly in report.anomalies:
        group_id: str | None = None
        owner: str | None = None
        if anomaly.dimension == "key":
            found = await repository.key_group(session, rule.org_id, anomaly.id)
            if found is not None:
                group_id, owner = found
        elif anomaly.dimension == "member":
            member = await repository.member(session, rule.org_id, anomaly.id)
            owner = anomaly.id
            group_id = member[1] if member is not None else None
        finding = anomaly.finding
        draft = AlertDraft(
            org_id=rule.org_id,
            event="anomaly.detected",
            dedupe_key=f"anomaly.detected:{anomaly.dimension}:{anomaly.id}:{finding.day}",
            severity="warning",
            title=f"Unusual spend: {anomaly.dimension} {anomaly.label}",
            text=anomaly.reason,
            occurred_at=now,
            group_id=group_id,
            key_owner_id=owner,
            fields=(
                ("Spend", f"${nanos_to_usd(finding.spend)}"),
                ("Usual", f"${nanos_to_usd(round(finding.median))}"),
                ("Day", finding.day.isoformat()),
            ),
            details={
                "dimension": anomaly.dimension,
                "id": anomaly.id,
                "day": finding.day.isoformat(),
                "spend_usd": nanos_to_usd(finding.spend),
                "median_usd": nanos_to_usd(round(finding.median)),
                "z": round(float(finding.z), 2),
            },
        )
        raised += await _raised(session, draft)
    return raised


async def _raised(session: AsyncSession, draft: AlertDraft) -> int:
    return 1 if await raise_alert(session, draft) is not None else 0


CHECKS: dict[str, Callable[[AsyncSession, AlertRule, datetime], Awaitable[int]]] = {
    "credit.low": check_credit_low,
    "guardrail.blocked": check_guardrail_blocked,
    "anomaly.detected": check_anomalies,
}
