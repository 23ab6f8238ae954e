"""HTTP routes of the audit trail: an org's events and their verification, and the platform
chain of identity events (platform admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.api.fields import Id, Moment
from sluicegate.api.pages import Page
from sluicegate.audit_trail import service as trail
from sluicegate.audit_trail.schemas import AuditEventOut, ChainReportOut
from sluicegate.audit_trail.service import AuditFilters
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(tags=["audit"], responses=STANDARD_ERRORS)
Text = Annotated[str | None, Query(max_length=64, pattern=r"^[\w.:-]+$")]
FilterId = Annotated[Id | None, Query()]


def _filters(
    action: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[\w.:-]+$", description="'key' or 'key.create'"),
    ] = None,
    actor_user_id: FilterId = None,
    target_type: Text = None,
    target_id: FilterId = None,
    since: Annotated[Moment | None, Query(description="RFC 3339; events at or after")] = None,
    until: Annotated[Moment | None, Query(description="RFC 3339; events before")] = None,
) -> AuditFilters:
    return AuditFilters(action, actor_user_id, target_type, target_id, since, until)


Filters = Annotated[AuditFilters, Depends(_filters)]


@router.get("/orgs/{org_id}/audit")
async def list_org_events(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    filters: Filters,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[AuditEventOut]:
    """The org's audit events, newest first: all of them for owners, those of their subtree for
    admins and viewers."""
    return _page(
        await trail.list_events(session, actor, org_id, filters, cursor=cursor, limit=limit)
    )


@router.get("/orgs/{org_id}/audit/verify")
async def verify_org_chain(org_id: str, session: DbSession, actor: CurrentActor) -> ChainReportOut:
    """Recompute the org's hash chain from its first event and name the first broken link.
    Owners, and admins or viewers bound at the root."""
    return ChainReportOut.of(await trail.verify(session, actor, org_id))


@router.get("/audit")
async def list_platform_events(
    session: DbSession,
    actor: CurrentActor,
    filters: Filters,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[AuditEventOut]:
    """Platform admins: identity events (logins, tokens, freezes), newest first."""
    return _page(await trail.list_events(session, actor, None, filters, cursor=cursor, limit=limit))


@router.get("/audit/verify")
async def verify_platform_chain(session: DbSession, actor: CurrentActor) -> ChainReportOut:
    """Platform admins: recompute the platform chain."""
    return ChainReportOut.of(await trail.verify(session, actor, None))


def _page(found: tuple[list[Any], str | None]) -> Page[AuditEventOut]:
    events, next_cursor = found
    return Page(items=[AuditEventOut.model_validate(e) for e in events], next_cursor=next_cursor)
