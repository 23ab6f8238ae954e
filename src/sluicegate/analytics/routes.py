"""HTTP routes of analytics under /api/v1/orgs/{org_id}/analytics: activity, members, one member,
one key; each as JSON, as CSV (`.csv`, streamed) and as a PDF report (`.pdf`).

Every route takes `from`, `to` (dates read in `timezone`, both inclusive, or RFC 3339 instants,
`to` exclusive), `timezone` (IANA; the org's by default) and `granularity`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from sluicegate.analytics import export_csv, export_pdf, service
from sluicegate.analytics.schemas import (
    ActivityOut,
    Granularity,
    GroupBy,
    KeyDetailOut,
    MemberDetailOut,
    MembersOut,
    Metric,
    activity_json,
)
from sluicegate.analytics.service import Filters, WindowQuery
from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import STANDARD_ERRORS, Responses
from sluicegate.api.fields import Id, ModelPattern, ValueList
from sluicegate.identity.dependencies import CurrentActor

T = TypeVar("T")
BOUND_LIMIT = 40
TIMEZONE_LIMIT = 64

router = APIRouter(prefix="/orgs/{org_id}/analytics", tags=["analytics"], responses=STANDARD_ERRORS)


class PdfResponse(Response):
    # The routes declare response_class=Response: FastAPI documents the error responses under
    # the route's media type, and those are JSON.
    media_type = "application/pdf"


JSON = "application/json"
CSV: Responses = {200: {"content": {"text/csv": {}}, "description": "The view as CSV"}}
PDF: Responses = {
    200: {"content": {"application/pdf": {}}, "description": "The view as a PDF report"}
}


def _when(
    since: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=BOUND_LIMIT,
            description="a date YYYY-MM-DD in `timezone` (from its start) or an RFC 3339 instant "
            "on a quarter hour (at or after); default: 30 days before `to`",
            examples=["2026-03-01", "2026-03-01T00:00:00Z"],
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            alias="to",
            max_length=BOUND_LIMIT,
            description="a date (to its end, inclusive) or an RFC 3339 instant (before); "
            "default: today in `timezone`",
        ),
    ] = None,
    timezone: Annotated[
        str | None,
        Query(max_length=TIMEZONE_LIMIT, description="IANA name; default: the org's timezone"),
    ] = None,
    granularity: Annotated[
        Granularity, Query(description="bucket size; weeks start on Monday")
    ] = "day",
) -> WindowQuery:
    return WindowQuery(since, until, timezone, granularity)


def _filters(
    group_id: Annotated[Id | None, Query(description="the group and its whole subtree")] = None,
    user_id: Annotated[Id | None, Query(description="the member (key owner)")] = None,
    model: Annotated[ModelPattern | None, Query(description="the requested model")] = None,
    key_id: Annotated[Id | None, Query()] = None,
    provider: Annotated[
        ValueList | None,
        Query(description="the provider that served; several: a comma list, or repeated"),
    ] = None,
    app: Annotated[ModelPattern | None, Query(description="from HTTP-Referer or X-Title")] = None,
    deployment: Annotated[
        ValueList | None,
        Query(
            description="the deployment that served (its id, e.g. openai-eu/gpt-4o-mini); "
            "several: a comma list, or repeated"
        ),
    ] = None,
) -> Filters:
    return Filters(
        group_id,
        user_id,
        model,
        key_id,
        None if provider is None else tuple(provider),
        app,
        None if deployment is None else tuple(deployment),
    )


When = Annotated[WindowQuery, Depends(_when)]
Filtered = Annotated[Filters, Depends(_filters)]
GroupByParam = Annotated[GroupBy | None, Query(alias="groupBy", description="pivot dimension")]
MetricParam = Annotated[Metric, Query(description="what sorts the groups (and the PDF's table)")]
GroupLimit = Annotated[
    int,
    Query(
        ge=1,
        le=service.MAX_GROUPS,
        description="groups named; the rest are summed in one '(other)' group",
    ),
]


def _csv(chunks: AsyncIterator[str], name: str) -> StreamingResponse:
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


async def _pdf(render: Callable[[T], bytes], view: T, name: str) -> PdfResponse:
    content = await run_in_threadpool(render, view)
    return PdfResponse(
        content, headers={"content-disposition": f'attachment; filename="{name}.pdf"'}
    )


# --- activity -------------------------------------------------------------------------------------


async def _activity(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    when: When,
    filters: Filtered,
    group_by: GroupByParam = None,
    metric: MetricParam = "cost",
    limit: GroupLimit = service.DEFAULT_GROUPS,
) -> service.Activity:
    return await service.activity(
        session,
        actor,
        org_id,
        when,
        filters,
        group_by=group_by,
        metric=metric,
        limit=limit,
        now=now,
    )


ActivityView = Annotated[service.Activity, Depends(_activity)]


@router.get("/activity", response_model=ActivityOut)
async def get_activity(view: ActivityView) -> Response:
    """Spend, requests and tokens over time, pivoted by `groupBy` (model, project, key, member,
    provider, app, deployment), for the usage the caller reads: owners the whole org, admins and
    viewers their subtrees, members their own usage (the org's when it opens its usage to
    members)."""
    # Serialized here (the route's response model documents it): a year of days by model is
    # thousands of points.
    return Response(activity_json(view), media_type=JSON)


@router.get("/activity.csv", response_class=StreamingResponse, responses=CSV)
async def export_activity_csv(org_id: str, view: ActivityView) -> StreamingResponse:
    """The activity series as CSV: a row per bucket and group with usage."""
    return _csv(export_csv.activity_csv(view), f"activity-{org_id}")


@router.get("/activity.pdf", response_class=Response, responses=PDF)
async def export_activity_pdf(org_id: str, view: ActivityView) -> PdfResponse:
    """The activity as a PDF report: summary cards, cost over time, the top groups."""
    return await _pdf(export_pdf.activity_pdf, view, f"activity-{org_id}")


# --- members --------------------------------------------------------------------------------------


@router.get("/members")
async def list_members(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    when: When,
    filters: Filtered,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> MembersOut:
    """One row per member with usage in the window (that the caller reads), the largest spend
    first: spend, requests, tokens, error rate, key count."""
    members = await service.members(
        session, actor, org_id, when, filters, cursor=cursor, limit=limit, now=now
    )
    return MembersOut.of(members)


async def _every_member(
    org_id: str, session: DbSession, actor: CurrentActor, now: Now, when: When, filters: Filtered
) -> service.Members:
    return await service.members(
        session, actor, org_id, when, filters, cursor=None, limit=None, now=now, with_series=True
    )


EveryMember = Annotated[service.Members, Depends(_every_member)]


@router.get("/members.csv", response_class=StreamingResponse, responses=CSV)
async def export_members_csv(org_id: str, members: EveryMember) -> StreamingResponse:
    """Every member with usage in the window as CSV, the largest spend first."""
    return _csv(export_csv.members_csv(members), f"members-{org_id}")


@router.get("/members.pdf", response_class=Response, responses=PDF)
async def export_members_pdf(org_id: str, members: EveryMember) -> PdfResponse:
    """The members as a PDF report: summary cards, cost over time, members by spend."""
    return await _pdf(export_pdf.members_pdf, members, f"members-{org_id}")


# --- one member -----------------------------------------------------------------------------------
# The .csv and .pdf routes come first: `{user_id}` alone would also match "usr_1.csv".


async def _member(
    org_id: str, user_id: str, session: DbSession, actor: CurrentActor, now: Now, when: When
) -> service.MemberDetail:
    return await service.member_detail(session, actor, org_id, user_id, when, now=now)


MemberView = Annotated[service.MemberDetail, Depends(_member)]


@router.get("/members/{user_id}.csv", response_class=StreamingResponse, responses=CSV)
async def export_member_csv(org_id: str, user_id: str, detail: MemberView) -> StreamingResponse:
    """The member's usage per bucket and model as CSV."""
    return _csv(export_csv.member_csv(detail), f"member-{user_id}")


@router.get("/members/{user_id}.pdf", response_class=Response, responses=PDF)
async def export_member_pdf(org_id: str, user_id: str, detail: MemberView) -> PdfResponse:
    """The member as a PDF report: cards, top model, provider and app, cost by model."""
    return await _pdf(export_pdf.member_pdf, detail, f"member-{user_id}")


@router.get("/members/{user_id}")
async def get_member(detail: MemberView) -> MemberDetailOut:
    """One member's usage: cards, top model, provider and app, cost by model, and the series.
    Yourself; owners; admins and viewers at the member's home group or above; everyone when the
    org opens its usage to members."""
    return MemberDetailOut.of(detail)


# --- one key --------------------------------------------------------------------------------------


async def _key(
    org_id: str, key_id: str, session: DbSession, actor: CurrentActor, now: Now, when: When
) -> service.KeyDetail:
    return await service.key_detail(session, actor, org_id, key_id, when, now=now)


KeyView = Annotated[service.KeyDetail, Depends(_key)]


@router.get("/keys/{key_id}.csv", response_class=StreamingResponse, responses=CSV)
async def export_key_csv(org_id: str, key_id: str, detail: KeyView) -> StreamingResponse:
    """The key's usage per bucket and model as CSV."""
    return _csv(export_csv.key_csv(detail), f"key-{key_id}")


@router.get("/keys/{key_id}.pdf", response_class=Response, responses=PDF)
async def export_key_pdf(org_id: str, key_id: str, detail: KeyView) -> PdfResponse:
    """The key as a PDF report: cost, tokens, requests, error rate, cost by model."""
    return await _pdf(export_pdf.key_pdf, detail, f"key-{key_id}")


@router.get("/keys/{key_id}")
async def get_key(detail: KeyView) -> KeyDetailOut:
    """One key's cost, tokens, requests and error rate, by model and over time. Its owner;
    owners; admins and viewers at its group or above; everyone when the org opens its usage."""
    return KeyDetailOut.of(detail)
