"""HTTP routes of budgets under /api/v1/orgs/{org_id}/budgets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import STANDARD_ERRORS, UNAVAILABLE
from sluicegate.api.fields import Id
from sluicegate.api.pages import Page
from sluicegate.core.money import nanos_to_usd
from sluicegate.guard import budget_service as service
from sluicegate.guard.budget_schemas import BudgetOut, BudgetPut, ScopeType
from sluicegate.guard.dependencies import Counters
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(
    prefix="/orgs/{org_id}/budgets",
    tags=["budgets"],
    responses={**STANDARD_ERRORS, **UNAVAILABLE},
)


def _out(view: service.BudgetView) -> BudgetOut:
    budget, counter, value = view.budget, view.counter, view.value
    spent = reserved = remaining = None
    if value is not None:
        spent, reserved = nanos_to_usd(value.used), nanos_to_usd(value.reserved)
        remaining = nanos_to_usd(max(0, budget.limit_nusd - value.used - value.reserved))
    return BudgetOut(
        id=budget.id,
        scope_type=budget.scope_type,
        scope_id=budget.scope_id,
        limit_usd=nanos_to_usd(budget.limit_nusd),
        period=budget.period,
        enforcement=budget.enforcement,
        thresholds=list(budget.thresholds),
        spent_usd=spent,
        reserved_usd=reserved,
        remaining_usd=remaining,
        period_start=counter.spend.start,
        period_end=counter.spend.end,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
    )


@router.put("")
async def put_budget(
    org_id: str,
    body: BudgetPut,
    session: DbSession,
    actor: CurrentActor,
    counters: Counters,
    now: Now,
) -> BudgetOut:
    """Create the budget of this scope and period, or replace its limit, enforcement and
    thresholds (spend so far is kept). Set from above the scope: owners for the org and the
    default member budget, admins strictly above a group, over a member, or over a key's owner."""
    view = await service.put_budget(
        session,
        actor,
        org_id,
        counters,
        scope_type=body.scope_type,
        scope_id=body.scope_id,
        limit_nusd=body.limit_usd,
        period=body.period,
        enforcement=body.enforcement,
        thresholds=body.thresholds,
        now=now,
    )
    return _out(view)


@router.get("")
async def list_budgets(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    counters: Counters,
    now: Now,
    scope_type: Annotated[ScopeType | None, Query()] = None,
    scope_id: Annotated[Id | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[BudgetOut]:
    """The budgets you may read, each with what is spent this period and held right now."""
    views, next_cursor = await service.list_budgets(
        session,
        actor,
        org_id,
        counters,
        scope_type=scope_type,
        scope_id=scope_id,
        cursor=cursor,
        limit=limit,
        now=now,
    )
    return Page(items=[_out(view) for view in views], next_cursor=next_cursor)


@router.get("/{budget_id}")
async def get_budget(
    org_id: str,
    budget_id: str,
    session: DbSession,
    actor: CurrentActor,
    counters: Counters,
    now: Now,
) -> BudgetOut:
    return _out(await service.get_budget(session, actor, org_id, counters, budget_id, now))


@router.delete("/{budget_id}", status_code=204)
async def delete_budget(
    org_id: str,
    budget_id: str,
    session: DbSession,
    actor: CurrentActor,
    counters: Counters,
    now: Now,
) -> Response:
    await service.delete_budget(session, actor, org_id, counters, budget_id, now)
    return Response(status_code=204)
