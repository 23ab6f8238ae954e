"""HTTP routes of alert channels and alert rules under /api/v1/orgs/{org_id}/alerts.

A channel's URL is checked against SSRF with the DNS resolver the app holds in
`app.state.egress_resolver` when one is set (tests put a resolver of their own there, since the
names of Slack and Discord do not resolve offline), else the system's resolver.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from sluicegate.alerts import channel_service, rule_service
from sluicegate.alerts.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelOut,
    ChannelUpdate,
    Event,
    RuleCreate,
    RuleOut,
    RuleUpdate,
)
from sluicegate.api.deps import DEFAULT_PAGE, CurrentSettings, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import CONFLICT, STANDARD_ERRORS
from sluicegate.api.fields import Id
from sluicegate.api.pages import Page
from sluicegate.core.egress import Resolver, system_resolver
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(prefix="/orgs/{org_id}/alerts", tags=["alerts"], responses=STANDARD_ERRORS)

EGRESS_RESOLVER = "egress_resolver"


def _outbound(request: Request, settings: CurrentSettings) -> channel_service.Outbound:
    resolve: Resolver = getattr(request.app.state, EGRESS_RESOLVER, system_resolver)
    return channel_service.Outbound.build(
        settings.secret, settings.outbound_allowed, resolve, mail=settings.smtp is not None
    )


Outbound = Annotated[channel_service.Outbound, Depends(_outbound)]


# --- channels ----------------------------------------------------------------------------------


@router.post("/channels", status_code=201, responses=CONFLICT)
async def create_channel(
    org_id: str,
    body: ChannelCreate,
    session: DbSession,
    actor: CurrentActor,
    outbound: Outbound,
    now: Now,
) -> ChannelCreated:
    """A new channel (owners and admins). The URL must reach a public address (or a network the
    operator allows); Slack and Discord URLs must be their incoming webhooks; an email channel
    takes `to` (1 to 20 addresses) where an SMTP server is configured. A webhook's signing
    secret is shown only here and on rotation; the URL or addresses are never shown again."""
    channel, secret = await channel_service.create_channel(
        session,
        actor,
        org_id,
        outbound,
        name=body.name,
        kind=body.kind,
        url=body.url,
        to=body.to,
        enabled=body.enabled,
        now=now,
    )
    return ChannelCreated(**ChannelOut.of(channel).model_dump(), signing_secret=secret)


@router.get("/channels")
async def list_channels(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[ChannelOut]:
    """The org's channels (owners, admins and viewers); never a URL or a secret."""
    channels, next_cursor = await channel_service.list_channels(
        session, actor, org_id, cursor=cursor, limit=limit
    )
    return Page(items=[ChannelOut.of(c) for c in channels], next_cursor=next_cursor)


@router.get("/channels/{channel_id}")
async def get_channel(
    org_id: str, channel_id: str, session: DbSession, actor: CurrentActor
) -> ChannelOut:
    return ChannelOut.of(await channel_service.get_channel(session, actor, org_id, channel_id))


@router.patch("/channels/{channel_id}", responses=CONFLICT)
async def update_channel(
    org_id: str,
    channel_id: str,
    body: ChannelUpdate,
    session: DbSession,
    actor: CurrentActor,
    outbound: Outbound,
    now: Now,
) -> ChannelOut:
    """Change name, url (checked again; a webhook keeps its signing secret), to (an email
    channel's addresses) or enabled."""
    changes = body.model_dump(exclude_unset=True)
    channel = await channel_service.update_channel(
        session, actor, org_id, outbound, channel_id, changes, now=now
    )
    return ChannelOut.of(channel)


@router.post("/channels/{channel_id}/rotate-secret", responses=CONFLICT)
async def rotate_signing_secret(
    org_id: str,
    channel_id: str,
    session: DbSession,
    actor: CurrentActor,
    outbound: Outbound,
    now: Now,
) -> ChannelCreated:
    """A new signing secret for a webhook channel, shown only here. For 24 hours deliveries
    carry signatures by both the new and the old secret, so receivers can switch over."""
    channel, secret, previous_expires_at = await channel_service.rotate_signing_secret(
        session, actor, org_id, outbound, channel_id, now=now
    )
    return ChannelCreated(
        **ChannelOut.of(channel).model_dump(),
        signing_secret=secret,
        previous_secret_expires_at=previous_expires_at,
    )


@router.delete("/channels/{channel_id}", status_code=204)
async def delete_channel(
    org_id: str, channel_id: str, session: DbSession, actor: CurrentActor, now: Now
) -> Response:
    """Delete the channel: its pending deliveries are cancelled and rules that named it keep
    their other channels and recipients."""
    await channel_service.delete_channel(session, actor, org_id, channel_id, now=now)
    return Response(status_code=204)


# --- rules -------------------------------------------------------------------------------------


@router.post("/rules", status_code=201)
async def create_rule(
    org_id: str, body: RuleCreate, session: DbSession, actor: CurrentActor, now: Now
) -> RuleOut:
    """A rule: which event, in which part of the org (scope_group_id; null: all of it), with
    which params, reaching which recipients and channels (at least one of them). Owners, and
    admins at the scope or above it."""
    rule = await rule_service.create_rule(
        session,
        actor,
        org_id,
        name=body.name,
        event=body.event,
        scope_group_id=body.scope_group_id,
        params=body.params,
        recipients=body.recipients.model_dump(),
        channel_ids=body.channel_ids,
        enabled=body.enabled,
        now=now,
    )
    return RuleOut.of(rule)


@router.get("/rules")
async def list_rules(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    event: Event | None = None,
    scope_group_id: Annotated[Id | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[RuleOut]:
    """The rules whose scope you read (owners: all; admins and viewers: their subtrees).
    scope_group_id keeps the rules of exactly that group (the root group: the whole-org ones)."""
    rules, next_cursor = await rule_service.list_rules(
        session,
        actor,
        org_id,
        event=event,
        scope_group_id=scope_group_id,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[RuleOut.of(r) for r in rules], next_cursor=next_cursor)


@router.get("/rules/{rule_id}")
async def get_rule(org_id: str, rule_id: str, session: DbSession, actor: CurrentActor) -> RuleOut:
    return RuleOut.of(await rule_service.get_rule(session, actor, org_id, rule_id))


@router.patch("/rules/{rule_id}")
async def update_rule(
    org_id: str, rule_id: str, body: RuleUpdate, session: DbSession, actor: CurrentActor, now: Now
) -> RuleOut:
    """Change any field; scope_group_id null moves the rule to the whole org, any other null
    changes nothing. A move needs the right to manage the rule at both ends."""
    changes = body.model_dump(exclude_unset=True)
    return RuleOut.of(
        await rule_service.update_rule(session, actor, org_id, rule_id, changes, now=now)
    )


@router.delete("/rules/{rule_id}", status_code=204)
async def delete_rule(
    org_id: str, rule_id: str, session: DbSession, actor: CurrentActor
) -> Response:
    await rule_service.delete_rule(session, actor, org_id, rule_id)
    return Response(status_code=204)
