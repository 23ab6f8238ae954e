"""HTTP routes of routing overrides: a group's at /api/v1/orgs/{org_id}/groups/{group_id}/routing,
the org's list at /api/v1/orgs/{org_id}/routing, and a key's routing at
/api/v1/orgs/{org_id}/keys/{key_id}/routing."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit, Now, Providers
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.api.pages import Page
from sluicegate.identity.dependencies import CurrentActor
from sluicegate.routing import service
from sluicegate.routing.schemas import GroupRoutingOut, KeyRoutingOut, OverrideOut, RoutingPut

router = APIRouter(prefix="/orgs/{org_id}", tags=["routing"], responses=STANDARD_ERRORS)


@router.put("/groups/{group_id}/routing")
async def put_group_routing(
    org_id: str,
    group_id: str,
    body: RoutingPut,
    session: DbSession,
    actor: CurrentActor,
    providers: Providers,
    now: Now,
) -> OverrideOut:
    """Create the group's routing override or replace all of it. A field null or left out is not
    set by this group: it comes from the nearest group above that sets it. Set from above the
    group: owners, and admins strictly above it. Provider names and fallback model ids must be
    in the gateway's providers file. The proxy sees the change within a second on every
    worker."""
    row = await service.put_override(
        session, actor, org_id, group_id, body.as_override(), providers=providers, now=now
    )
    return OverrideOut.of(row)


@router.get("/groups/{group_id}/routing")
async def get_group_routing(
    org_id: str, group_id: str, session: DbSession, actor: CurrentActor
) -> GroupRoutingOut:
    """The group's own override (null when it sets nothing) and the routing in force at the group:
    each field from the nearest group that sets it, and which group that is (`source`)."""
    return GroupRoutingOut.of(await service.group_routing(session, actor, org_id, group_id))


@router.delete("/groups/{group_id}/routing", status_code=204)
async def delete_group_routing(
    org_id: str, group_id: str, session: DbSession, actor: CurrentActor
) -> Response:
    """Remove the group's override: every field is inherited again."""
    await service.delete_override(session, actor, org_id, group_id)
    return Response(status_code=204)


@router.get("/routing")
async def list_routing_overrides(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[OverrideOut]:
    """The routing overrides of the org's groups: all of them for owners, those of the subtrees
    an admin or viewer covers."""
    rows, next_cursor = await service.list_overrides(
        session, actor, org_id, cursor=cursor, limit=limit
    )
    return Page(items=[OverrideOut.of(row) for row in rows], next_cursor=next_cursor)


@router.get("/keys/{key_id}/routing")
async def key_routing(
    org_id: str, key_id: str, session: DbSession, actor: CurrentActor
) -> KeyRoutingOut:
    """The routing a key's requests are served with, exactly as the proxy combines it: each
    field from the nearest group of the key's chain that sets it, and which group that is.
    Readable by whoever may read the key."""
    return KeyRoutingOut.of(await service.key_routing(session, actor, org_id, key_id))
