"""HTTP routes of the activity feed under /api/v1/orgs/{org_id}/activity (JSON pages and CSV)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from sluicegate.analytics import feed
from sluicegate.analytics.feed import FeedQuery
from sluicegate.analytics.feed_schemas import DayOrInstant, FeedEntryOut, Outcome, activity_csv
from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.api.fields import Id, ModelPattern, ValueList
from sluicegate.api.pages import Page
from sluicegate.identity.dependencies import CurrentActor

# A page of the feed is light (no content), so it may be longer than other lists.
MAX_FEED_PAGE = 500
FIRST_STATUS, LAST_STATUS = 100, 599

router = APIRouter(prefix="/orgs/{org_id}", tags=["activity"], responses=STANDARD_ERRORS)


def _query(
    key_id: Annotated[Id | None, Query()] = None,
    user_id: Annotated[Id | None, Query(description="the member (key owner)")] = None,
    model: Annotated[ModelPattern | None, Query(description="requested or served model")] = None,
    status: Annotated[
        Outcome | None, Query(description="ok, error, or blocked (by a guardrail)")
    ] = None,
    status_code: Annotated[int | None, Query(ge=FIRST_STATUS, le=LAST_STATUS)] = None,
    since: Annotated[
        DayOrInstant | None,
        Query(alias="from", description="a date (from its start) or an instant (at or after)"),
    ] = None,
    until: Annotated[
        DayOrInstant | None,
        Query(alias="to", description="a date (to its end, inclusive) or an instant (before)"),
    ] = None,
    provider: Annotated[
        ValueList | None,
        Query(description="the provider that served; several: a comma list, or repeated"),
    ] = None,
    deployment: Annotated[
        ValueList | None,
        Query(description="the deployment that served; several: a comma list, or repeated"),
    ] = None,
) -> FeedQuery:
    return FeedQuery(
        key_id,
        user_id,
        model,
        status,
        status_code,
        since,
        until,
        None if provider is None else tuple(provider),
        None if deployment is None else tuple(deployment),
    )


Filters = Annotated[FeedQuery, Depends(_query)]
FeedLimit = Annotated[int, Query(ge=1, le=MAX_FEED_PAGE, description="requests per page")]


@router.get("/activity")
async def list_activity(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    filters: Filters,
    cursor: Cursor = None,
    limit: FeedLimit = DEFAULT_PAGE,
) -> Page[FeedEntryOut]:
    """Every proxied request, newest first, with its key, member, models, provider and
    deployment (attempts, fallback), outcome, tokens, cost and timings (never content). Owners
    see the whole org, admins and viewers their subtrees, members their own requests (or the
    whole org when the org opens its feed to members)."""
    entries, next_cursor = await feed.list_activity(
        session, actor, org_id, filters, cursor=cursor, limit=limit
    )
    return Page(items=[FeedEntryOut.of(entry) for entry in entries], next_cursor=next_cursor)


@router.get(
    "/activity.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "The activity feed as CSV"}},
)
async def export_activity(
    org_id: str, session: DbSession, actor: CurrentActor, filters: Filters
) -> StreamingResponse:
    """Every request the filters select, newest first, as CSV, streamed. If the database fails
    mid-way the last line starts with `# export incomplete:`."""
    pages = await feed.export_activity(session, actor, org_id, filters)
    return StreamingResponse(
        activity_csv(pages),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="activity-{org_id}.csv"'},
    )
