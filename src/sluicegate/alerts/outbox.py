"""Raising an alert: store it once (its dedupe key), find the rules it matches, name the people
they name and put one delivery per channel and one per person in the outbox (a person is
mailed, alerts/mailer.py), all in the caller's transaction. So
an alert exists exactly when the change that caused it is committed, and the delivery worker
(alerts/delivery.py) takes it from there.

Budget thresholds come from the counters' settle step (guard/counters.py `Crossing`): the usage
event of the request that crossed carries them, and the usage writer or drain announces them
(metering/events.py `BudgetThresholdsCrossed`), handled by `record_crossings` in the
transaction that stores that event (sluicegate/handlers.py). A redelivered event stores
nothing twice, and the dedupe key (budget, member, period, percent) makes each threshold fire
once per budget period even if two crossings of it were ever reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import outbox_repository as repository
from sluicegate.alerts.models import AlertRule
from sluicegate.core.clock import utcnow
from sluicegate.core.ids import new_id
from sluicegate.core.money import nanos_to_usd
from sluicegate.guard.counters import Crossing, decode_crossings
from sluicegate.metering.event import UsageRecord

log = logging.getLogger("sluicegate.alerts")

PERIOD_WORDS = {"day": "daily", "week": "weekly", "month": "monthly", "total": "total"}
# Threshold percentages from which an alert is a warning, and critical (the limit itself).
WARNING_PERCENT = 80
CRITICAL_PERCENT = 100


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """An event as the outbox takes it. `group_id` is the node it happened at (None: the org
    as a whole); `key_owner_id` the person a rule's `key_owner` recipient means; `attributes`
    what rules' params filter on (e.g. budget_id, percent)."""

    org_id: str
    event: str
    dedupe_key: str
    severity: str
    title: str
    text: str
    occurred_at: datetime
    group_id: str | None = None
    key_owner_id: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    # The one rule this alert is for, when the condition is that rule's own (a credit.low
    # amount, a guardrail.blocked count); None: every rule of the event that matches.
    rule_id: str | None = None


async def raise_alert(session: AsyncSession, draft: AlertDraft) -> str | None:
    """Store the alert and its deliveries; the alert's id, or None when an alert with this
    dedupe key exists already (nothing is done twice)."""
    alert_id = new_id("alt")
    node_path = await _node_path(session, draft.org_id, draft.group_id)
    rules = [
        rule
        for rule in await repository.enabled_rules(session, draft.org_id, draft.event)
        if _params_match(rule, draft.attributes) and draft.rule_id in (None, rule.id)
    ]
    rules = await _in_scope(session, draft.org_id, rules, node_path)
    recipients = await _recipients(session, draft, rules, node_path)
    stored = await repository.insert_alert(
        session,
        {
            "id": alert_id,
            "org_id": draft.org_id,
            "event": draft.event,
            "dedupe_key": draft.dedupe_key[:300],
            "severity": draft.severity,
            "title": draft.title[:300],
            "text": draft.text,
            "group_id": draft.group_id,
            "fields": [list(pair) for pair in draft.fields],
            "details": draft.details,
            "recipient_user_ids": sorted(recipients),
            "occurred_at": draft.occurred_at,
            "created_at": utcnow(),
        },
    )
    if not stored:
        return None
    channel_of: dict[str, str] = {}
    for rule in rules:
        for channel_id in rule.channel_ids:
            channel_of.setdefault(channel_id, rule.id)
    live = await repository.live_channel_ids(session, draft.org_id, list(channel_of))
    now = utcnow()

    def pending(rule_id: str, channel_id: str | None, user_id: str | None) -> dict[str, Any]:
        return {
            "id": new_id("dlv"),
            "org_id": draft.org_id,
            "alert_id": alert_id,
            "channel_id": channel_id,
            "recipient_user_id": user_id,
            "rule_id": rule_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }

    await repository.insert_deliveries(
        session,
        [
            pending(rule_id, channel_id, None)
            for channel_id, rule_id in channel_of.items()
            if channel_id in live
        ]
        + [pending(rule_id, None, user_id) for user_id, rule_id in sorted(recipients.items())],
    )
    return alert_id


def _params_match(rule: AlertRule, attributes: Mapping[str, Any]) -> bool:
    params = rule.params or {}
    if rule.event == "budget.threshold":
        budget_ids = params.get("budget_ids")
        if budget_ids and attributes.get("budget_id") not in budget_ids:
            return False
        minimum = params.get("min_percent")
        if minimum is not None and int(attributes.get("percent", 0)) < int(minimum):
            return False
    return True


async def _node_path(session: AsyncSession, org_id: str, group_id: str | None) -> str | None:
    if group_id is None:
        return await repository.root_path(session, org_id)
    return (await repository.group_paths(session, org_id, [group_id])).get(group_id)


async def _in_scope(
    session: AsyncSession, org_id: str, rules: list[AlertRule], node_path: str | None
) -> list[AlertRule]:
    """Rules whose scope is the whole org, or a group at or above the event's node."""
    scoped = [rule.scope_group_id for rule in rules if rule.scope_group_id is not None]
    paths = await repository.group_paths(session, org_id, scoped)
    kept = []
    for rule in rules:
        if rule.scope_group_id is None:
            kept.append(rule)
            continue
        scope = paths.get(rule.scope_group_id)
        if scope is not None and node_path is not None and _within(node_path, scope):
            kept.append(rule)
    return kept


def _within(path: str, anchor: str) -> bool:
    return path == anchor or path.startswith(anchor + "/")


async def _recipients(
    session: AsyncSession, draft: AlertDraft, rules: Sequence[AlertRule], node_path: str | None
) -> dict[str, str]:
    """The people the rules name, each with the first rule (in the rules' order) naming them:
    one delivery per person, however many rules name them."""
    people: dict[str, str] = {}
    admins: list[str] | None = None
    for rule in rules:
        named = rule.recipients or {}
        if named.get("key_owner") and draft.key_owner_id:
            people.setdefault(draft.key_owner_id, rule.id)
        if named.get("scope_admins") and node_path is not None:
            if admins is None:
                admins = await repository.admins_covering(session, draft.org_id, node_path)
            for user_id in admins:
                people.setdefault(user_id, rule.id)
        for user_id in named.get("user_ids") or ():
            people.setdefault(str(user_id), rule.id)
    return people


# --- budget thresholds ------------------------------------------------------------------------


async def record_crossings(session: AsyncSession, events: Sequence[UsageRecord]) -> int:
    """Raise `budget.threshold` for the crossings that stored usage events carry (their
    `crossed` field); how many alerts were new."""
    pending = [
        (event, crossing) for event in events for crossing in decode_crossings(event.get("crossed"))
    ]
    if not pending:
        return 0
    budgets = await repository.budgets_by_id(session, [c.budget_id for _, c in pending])
    raised = 0
    for event, crossing in pending:
        budget = budgets.get(crossing.budget_id)
        if budget is None or budget.org_id != event["org_id"]:
            # Deleted since (its counter outlives it briefly): nothing left to alert about.
            log.info(
                "threshold crossed on a budget that no longer exists",
                extra={"budget_id": crossing.budget_id},
            )
            continue
        draft = await _threshold_draft(session, budget, crossing, event)
        if await raise_alert(session, draft) is not None:
            raised += 1
    return raised


async def _threshold_draft(
    session: AsyncSession, budget: Any, crossing: Crossing, event: Mapping[str, Any]
) -> AlertDraft:
    org_id = budget.org_id
    scope_type, scope_id = budget.scope_type, budget.scope_id
    group_id: str | None = None
    owner: str | None = None
    label = scope_id
    if scope_type == "org":
        org = await repository.organization(session, org_id)
        label = org.name if org is not None else org_id
    elif scope_type == "group":
        group_id = scope_id
        found = await repository.group(session, org_id, scope_id)
        label = found.name if found is not None else scope_id
    elif scope_type == "key":
        key = await repository.api_key(session, org_id, scope_id)
        if key is not None:
            group_id, owner, label = key.group_id, key.owner_user_id, key.name
    else:  # member, or member_default counting for the member in the crossing
        user_id = crossing.subject if scope_type == "member_default" else scope_id
        found_member = await repository.member(session, org_id, user_id)
        owner = user_id
        if found_member is not None:
            label, group_id = found_member[0].email, found_member[1]
    period_start = (
        datetime.fromtimestamp(crossing.period_start_ms / 1000, UTC)
        if crossing.period_start_ms
        else None
    )
    spent, limit = nanos_to_usd(crossing.spent), nanos_to_usd(budget.limit_nusd)
    period = PERIOD_WORDS.get(budget.period, budget.period)
    kind = "member" if scope_type == "member_default" else scope_type
    severity = (
        "critical"
        if crossing.percent >= CRITICAL_PERCENT
        else "warning"
        if crossing.percent >= WARNING_PERCENT
        else "info"
    )
    return AlertDraft(
        org_id=org_id,
        event="budget.threshold",
        dedupe_key=(
            f"budget.threshold:{budget.id}:{crossing.subject}:{crossing.period_start_ms}:"
            f"{crossing.percent}"
        ),
        severity=severity,
        title=f"Budget at {crossing.percent}%: {kind} {label}",
        text=(
            f"The {period} budget of {kind} {label} has reached {crossing.percent}% of its "
            f"limit: ${_short(spent)} spent of ${_short(limit)}."
        ),
        occurred_at=event["created_at"],
        group_id=group_id,
        key_owner_id=owner,
        fields=(
            ("Scope", f"{kind} {label}"),
            (
                "Period",
                period if period_start is None else f"{period} from {period_start:%Y-%m-%d}",
            ),
            ("Spent", f"${_short(spent)}"),
            ("Limit", f"${_short(limit)} ({budget.enforcement})"),
            ("Threshold", f"{crossing.percent}%"),
        ),
        details={
            "budget_id": budget.id,
            "scope_type": scope_type,
            "scope_id": scope_id,
            "member_id": crossing.subject if scope_type == "member_default" else None,
            "period": budget.period,
            "period_start": period_start.isoformat() if period_start else None,
            "percent": crossing.percent,
            "spent_usd": spent,
            "limit_usd": limit,
            "enforcement": budget.enforcement,
            "request_id": event.get("request_id"),
            "key_id": event.get("key_id"),
        },
        attributes={"budget_id": budget.id, "percent": crossing.percent},
    )


def _short(usd: str) -> str:
    """12.500000000 -> 12.50: cents, and more digits only when they carry something."""
    whole, _, fraction = usd.partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction.ljust(2, '0')}"
