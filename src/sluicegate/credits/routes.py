"""HTTP routes of the credit pool under /api/v1/orgs/{org_id}/credits."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import STANDARD_ERRORS, UNAVAILABLE
from sluicegate.api.fields import Moment
from sluicegate.api.pages import Page
from sluicegate.credits import service
from sluicegate.credits.schemas import (
    AdjustmentIn,
    CreditsOut,
    LedgerEntryOut,
    LedgerKind,
    LedgerLineOut,
    TopUpIn,
    ledger_csv,
)
from sluicegate.credits.service import LedgerFilters
from sluicegate.guard.dependencies import Counters
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(prefix="/orgs/{org_id}/credits", tags=["credits"], responses=STANDARD_ERRORS)


def _filters(
    kind: Annotated[LedgerKind | None, Query()] = None,
    since: Annotated[Moment | None, Query(description="RFC 3339; entries at or after")] = None,
    until: Annotated[Moment | None, Query(description="RFC 3339; entries before")] = None,
) -> LedgerFilters:
    return LedgerFilters(kind, since, until)


Filters = Annotated[LedgerFilters, Depends(_filters)]


@router.get("", responses=UNAVAILABLE)
async def get_credits(
    org_id: str, session: DbSession, actor: CurrentActor, store: Counters
) -> CreditsOut:
    """The credit pool: owners, admins and viewers. When credit is enforced, the balance is the
    live one (settled usage counts at once) and `reserved` is what requests in flight hold."""
    return CreditsOut.of(await service.balance(session, actor, org_id, store))


@router.post("/topups", status_code=201)
async def top_up(
    org_id: str,
    body: TopUpIn,
    session: DbSession,
    actor: CurrentActor,
    store: Counters,
    now: Now,
) -> LedgerEntryOut:
    """Add credit: owners, and admins bound at the org's `topup_max_level` or above."""
    entry = await service.top_up(
        session, actor, org_id, store, amount_nusd=body.amount_usd, note=body.note, now=now
    )
    return LedgerEntryOut.of(entry)


@router.post("/adjustments", status_code=201)
async def adjust(
    org_id: str,
    body: AdjustmentIn,
    session: DbSession,
    actor: CurrentActor,
    store: Counters,
    now: Now,
) -> LedgerEntryOut:
    """Owners: correct the balance (an adjustment, either sign) or give credit back (a refund)."""
    entry = await service.adjust(
        session,
        actor,
        org_id,
        store,
        amount_nusd=body.amount_usd,
        kind=body.kind,
        note=body.note,
        now=now,
    )
    return LedgerEntryOut.of(entry)


@router.get("/ledger")
async def list_ledger(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    filters: Filters,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[LedgerLineOut]:
    """The ledger, newest first, each entry with the balance right after it. Usage debits are
    one entry per UTC hour, dated at that hour."""
    lines, next_cursor = await service.list_ledger(
        session, actor, org_id, filters, cursor=cursor, limit=limit
    )
    return Page(items=[LedgerLineOut.of_line(line) for line in lines], next_cursor=next_cursor)


@router.get(
    "/ledger.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The ledger as CSV"}},
)
async def export_ledger(
    org_id: str, session: DbSession, actor: CurrentActor, filters: Filters
) -> StreamingResponse:
    """The ledger as CSV, oldest first, with the same filters and balances as the list."""
    pages = await service.export_ledger(session, actor, org_id, filters)
    return StreamingResponse(
        ledger_csv(pages),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="ledger-{org_id}.csv"'},
    )
