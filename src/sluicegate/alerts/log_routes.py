"""HTTP routes of the alert log and of a channel's test-send, under /api/v1/orgs/{org_id}/alerts.

Included after the channel and rule routes: `/alerts/{alert_id}` would otherwise also match
their fixed paths (`/alerts/channels`, `/alerts/rules`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from sluicegate.alerts import log_service as service
from sluicegate.alerts.log_schemas import AlertDetail, AlertOut, ChannelTestOut
from sluicegate.alerts.routes import EGRESS_RESOLVER
from sluicegate.api.deps import DEFAULT_PAGE, CurrentSettings, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.api.fields import Moment
from sluicegate.api.pages import Page
from sluicegate.core.egress import system_resolver
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(prefix="/orgs/{org_id}/alerts", tags=["alerts"], responses=STANDARD_ERRORS)
EventName = Annotated[
    str | None, Query(max_length=32, pattern=r"^[a-z_.]+$", description="e.g. budget.threshold")
]
Since = Annotated[Moment | None, Query(description="RFC 3339; alerts that occurred at or after")]


@router.get("")
async def list_alerts(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    event: EventName = None,
    since: Since = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[AlertOut]:
    """The alerts raised in the parts of the org you read (owners: all; admins and viewers:
    their subtrees; members: none), newest first, each with its deliveries."""
    views, next_cursor = await service.list_alerts(
        session, actor, org_id, event=event, since=since, cursor=cursor, limit=limit
    )
    return Page(items=[AlertOut.of(view) for view in views], next_cursor=next_cursor)


@router.post("/channels/{channel_id}/test")
async def test_channel(
    org_id: str,
    channel_id: str,
    session: DbSession,
    actor: CurrentActor,
    settings: CurrentSettings,
    now: Now,
    request: Request,
) -> ChannelTestOut:
    """Send one test alert (event `test`, severity info) to the channel now, exactly as a real
    delivery goes (egress check, signature, headers), and say how the receiver answered. Owners
    and admins. Answers within the send timeout (10 s); leaves no delivery row."""
    return ChannelTestOut.of(
        await service.send_test_alert(
            session,
            actor,
            org_id,
            channel_id,
            settings=settings,
            now=now,
            # The resolver the channel routes check URLs with (replaceable in tests).
            resolve=getattr(request.app.state, EGRESS_RESOLVER, system_resolver),
        )
    )


@router.get("/{alert_id}")
async def get_alert(
    org_id: str, alert_id: str, session: DbSession, actor: CurrentActor
) -> AlertDetail:
    """One alert with its deliveries and each delivery's attempts (the delivery log)."""
    return AlertDetail.of(await service.get_alert(session, actor, org_id, alert_id))
