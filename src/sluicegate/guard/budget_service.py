"""The rules of budgets: create or replace per (scope, period), read with what is spent and held
right now (from the counter store, rebuilt from usage rows when missing), list, delete.

A budget is governed from above its scope (orgs.authorize GUARDRAIL_MANAGE): nobody sets their
own limits. Every change reaches every gateway worker through the GUARD_TOPIC invalidation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import after_commit, invalidate_after_commit
from sluicegate.core.errors import InvalidInput, NotFound, ServiceUnavailable
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import GUARD_TOPIC
from sluicegate.core.money import nanos_to_usd
from sluicegate.core.timezones import zone
from sluicegate.guard import repository
from sluicegate.guard.counters import (
    BudgetCounter,
    CounterStoreUnavailable,
    CounterValue,
    GuardStore,
)
from sluicegate.guard.enforcer import session_loader
from sluicegate.guard.models import Budget
from sluicegate.guard.rules import BudgetRule, budget_counter
from sluicegate.keys import service as keys
from sluicegate.orgs import membership_service
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    ADMIN,
    VIEWER,
    Action,
    OrgAccess,
    Path,
    Target,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.models import PATH_SEPARATOR


@dataclass(frozen=True, slots=True)
class BudgetView:
    budget: Budget
    counter: BudgetCounter
    value: CounterValue | None  # None for member_default: each member has their own counter


@dataclass(frozen=True, slots=True)
class Scope:
    """A budget's scope resolved: the rules' target, and whose spend its counter holds."""

    target: Target
    kind: str  # org | group | member | key (member_default counts per member: "member")
    id: str


async def put_budget(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    *,
    scope_type: str,
    scope_id: str | None,
    limit_nusd: int,
    period: str,
    enforcement: str,
    thresholds: list[int],
    now: datetime,
) -> BudgetView:
    """Create the budget of (scope, period), or replace its limit, enforcement and thresholds
    (what was spent this period stays)."""
    access = await orgs.load_access(session, actor, org_id)
    scope_id = _scope_id(access, scope_type, scope_id)
    scope = await _live_scope(session, access, scope_type, scope_id)
    authorize(access, Action.GUARDRAIL_MANAGE, scope.target)
    if limit_nusd < 0:
        raise InvalidInput("limit_usd: must be 0 or more", details={"field": "limit_usd"})
    levels = sorted(set(thresholds))
    budget = await repository.budget_for_scope(session, org_id, scope_type, scope_id, period)
    before = None if budget is None else budget_audit_view(budget)
    if budget is None:
        budget = Budget(
            id=new_id("bud"),
            org_id=org_id,
            scope_type=scope_type,
            scope_id=scope_id,
            period=period,
            limit_nusd=limit_nusd,
            enforcement=enforcement,
            thresholds=levels,
            created_at=now,
            updated_at=now,
        )
        await repository.add(session, budget)
    else:
        budget.limit_nusd, budget.enforcement, budget.thresholds = limit_nusd, enforcement, levels
        budget.updated_at = now
        await session.flush()
    invalidate_after_commit(session, GUARD_TOPIC, org_id)
    await _record(
        session,
        actor,
        budget,
        "budget.create" if before is None else "budget.update",
        _group_of_scope(access, scope),
        before=before,
        after=budget_audit_view(budget),
    )
    return (await _views(session, access, store, [budget], now))[0]


async def get_budget(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    budget_id: str,
    now: datetime,
) -> BudgetView:
    access, budget, _scope = await _budget_for(
        session, actor, org_id, budget_id, Action.GUARDRAIL_READ
    )
    return (await _views(session, access, store, [budget], now))[0]


async def list_budgets(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    *,
    scope_type: str | None,
    scope_id: str | None,
    cursor: str | None,
    limit: int,
    now: datetime,
) -> tuple[list[BudgetView], str | None]:
    """The budgets the caller may read: all for owners; those of the subtrees an admin or viewer
    covers; a member's own member and key budgets."""
    access = await orgs.load_access(session, actor, org_id)
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    budgets, next_cursor = await repository.list_budgets(
        session,
        org_id,
        scope_type=scope_type,
        scope_id=scope_id,
        readable=None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees],
        reader=actor.user_id,
        cursor=cursor,
        limit=limit,
    )
    return await _views(session, access, store, budgets, now), next_cursor


async def delete_budget(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    budget_id: str,
    now: datetime,
) -> None:
    access, budget, scope = await _budget_for(
        session, actor, org_id, budget_id, Action.GUARDRAIL_MANAGE
    )
    before = budget_audit_view(budget)
    group_id = _group_of_scope(access, scope)
    tz = zone((await orgs.organization_of(session, access)).timezone)
    counter = _counter(budget, scope, tz, now)
    await repository.delete_row(session, budget)
    invalidate_after_commit(session, GUARD_TOPIC, org_id)

    async def forget() -> None:
        await store.forget([counter.key])

    after_commit(session, forget)
    await _record(session, actor, budget, "budget.delete", group_id, before=before)


# --- scopes --------------------------------------------------------------------------------------


def _scope_id(access: OrgAccess, scope_type: str, scope_id: str | None) -> str:
    if scope_type in ("org", "member_default"):
        if scope_id not in (None, access.org_id):
            raise InvalidInput(
                f"scope_id: a {scope_type} budget's scope is the organization ({access.org_id})",
                details={"field": "scope_id"},
            )
        return access.org_id
    if scope_id is None:
        raise InvalidInput(
            f"scope_id: required for a {scope_type} budget (the {scope_type}'s id)",
            details={"field": "scope_id"},
        )
    return scope_id


async def _live_scope(
    session: AsyncSession, access: OrgAccess, scope_type: str, scope_id: str
) -> Scope:
    """The scope of a new or replaced budget: it must exist now (404 naming scope_id)."""
    if scope_type == "group":
        group = await orgs.group_of(session, access, scope_id, field="scope_id")
        if group.parent_id is None:
            raise InvalidInput(
                "scope_id: this is the org's root group; use scope_type 'org' for the whole org",
                details={"field": "scope_id"},
            )
        return Scope(orgs.path_of(group), "group", scope_id)
    if scope_type == "member":
        member = await membership_service.active_member_target(session, access.org_id, scope_id)
        if member is None:
            raise NotFound(
                f"scope_id: user {scope_id} is not a member of this organization",
                details={"field": "scope_id"},
            )
        return Scope(member, "member", scope_id)
    if scope_type == "key":
        key, target = await _key(session, access, scope_id)
        if key.status == "revoked":
            raise NotFound(f"scope_id: key {scope_id} was deleted", details={"field": "scope_id"})
        return Scope(target, "key", scope_id)
    return Scope(access.root, "org", access.org_id)


async def _any_scope(
    session: AsyncSession, access: OrgAccess, scope_type: str, scope_id: str
) -> Scope:
    """The scope of an existing budget, even when its group, member or key is gone since."""
    if scope_type == "group":
        groups = await orgs.groups_of(session, access, [scope_id])
        path: Path = orgs.path_of(groups[scope_id]) if scope_id in groups else access.root
        return Scope(path, "group", scope_id)
    if scope_type == "member":
        member = await membership_service.member_target(session, access.org_id, scope_id)
        return Scope(member if member is not None else access.root, "member", scope_id)
    if scope_type == "key":
        _key_row, target = await _key(session, access, scope_id)
        return Scope(target, "key", scope_id)
    return Scope(access.root, "org", access.org_id)


async def _key(session: AsyncSession, access: OrgAccess, key_id: str) -> tuple[Any, Any]:
    try:
        return await keys.key_and_target(session, access, key_id)
    except NotFound:
        raise NotFound(f"scope_id: key {key_id} not found", details={"field": "scope_id"}) from None


def _group_of_scope(access: OrgAccess, scope: Scope) -> str:
    """The node an audit event about this budget is placed on."""
    target = scope.target
    if isinstance(target, tuple):
        return target[-1]
    node = getattr(target, "node", None) or getattr(target, "home", None)
    return node[-1] if node else access.root[0]


async def _budget_for(
    session: AsyncSession, actor: Actor, org_id: str, budget_id: str, action: Action
) -> tuple[OrgAccess, Budget, Scope]:
    """An existing budget of the org and its scope, once the caller may `action` it (404 for
    unknown ids and other tenants')."""
    access = await orgs.load_access(session, actor, org_id)
    budget = await repository.budget_in_org(session, access.org_id, budget_id)
    if budget is None:
        raise NotFound(f"budget {budget_id} not found")
    scope = await _any_scope(session, access, budget.scope_type, budget.scope_id)
    authorize(access, action, scope.target)
    return access, budget, scope


# --- views ---------------------------------------------------------------------------------------


def _counter(budget: Budget, scope: Scope, tz: Any, now: datetime) -> BudgetCounter:
    """The budget's counter now. For member_default this names no member in particular: it gives
    the period's bounds, and its value is never read (each member has a counter of their own)."""
    return budget_counter(budget.org_id, BudgetRule.of(budget), scope.kind, scope.id, tz, now)


async def _views(
    session: AsyncSession,
    access: OrgAccess,
    store: GuardStore,
    budgets: Sequence[Budget],
    now: datetime,
) -> list[BudgetView]:
    if not budgets:
        return []
    tz = zone((await orgs.organization_of(session, access)).timezone)
    counters = [_counter(b, Scope(None, b.scope_type, b.scope_id), tz, now) for b in budgets]
    live = [c for b, c in zip(budgets, counters, strict=True) if b.scope_type != "member_default"]
    try:
        values = iter(await store.read(live, session_loader(session)))
    except CounterStoreUnavailable as exc:
        raise ServiceUnavailable(
            f"the counter store (Redis) is unavailable, so spent and reserved amounts cannot be "
            f"read right now: {exc}"
        ) from None
    return [
        BudgetView(b, c, None if b.scope_type == "member_default" else next(values))
        for b, c in zip(budgets, counters, strict=True)
    ]


def budget_audit_view(budget: Budget) -> dict[str, Any]:
    return {
        "scope_type": budget.scope_type,
        "scope_id": budget.scope_id,
        "period": budget.period,
        "limit_usd": nanos_to_usd(budget.limit_nusd),
        "enforcement": budget.enforcement,
        "thresholds": list(budget.thresholds),
    }


async def _record(
    session: AsyncSession,
    actor: Actor,
    budget: Budget,
    action: str,
    group_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    await record_action(
        session,
        actor,
        org_id=budget.org_id,
        action=action,
        target_type="budget",
        target_id=budget.id,
        group_id=group_id,
        before=before,
        after=after,
    )
