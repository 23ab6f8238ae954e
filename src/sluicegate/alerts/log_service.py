"""The rules of the alert log and of a channel's test-send.

An alert is read by those who read the node it happened at (ALERT_READ: owners, and admins and
viewers at that node or above it); an alert of the org as a whole (no group) by owners and the
admins and viewers bound at the root. The list holds only the alerts the caller may read (a
member's is empty); one alert the caller may not read is a 403. Another org's ids are 404.

A test-send (CHANNEL_MANAGE) sends one `test` alert to the channel at once, through the same
sender as the delivery worker (egress check, signature, headers; for an email channel the same
mail through the configured SMTP server), and answers what happened; it leaves no outbox row,
only an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import log_repository as repository
from sluicegate.alerts import payloads
from sluicegate.alerts.attempts import SendResult
from sluicegate.alerts.channel_config import channel_box
from sluicegate.alerts.mailer import AlertMailer
from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.alerts.sender import AlertSender
from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.egress import Resolver, system_resolver
from sluicegate.core.errors import NotFound
from sluicegate.core.ids import new_id
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    ADMIN,
    VIEWER,
    Action,
    OrgAccess,
    Path,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.models import PATH_SEPARATOR
from sluicegate.settings import Settings


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery: AlertDelivery
    attempts: list[AlertAttempt]


@dataclass(frozen=True, slots=True)
class AlertView:
    alert: Alert
    deliveries: list[DeliveryView]


@dataclass(frozen=True, slots=True)
class ChannelTestResult:
    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: int


async def list_alerts(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    event: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[AlertView], str | None]:
    """The alerts the caller may read, newest first, each with its deliveries."""
    access = await orgs.load_access(session, actor, org_id)
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    alerts, next_cursor = await repository.list_alerts(
        session,
        org_id,
        root=PATH_SEPARATOR.join(access.root),
        subtrees=None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees],
        event=event,
        since=since,
        cursor=cursor,
        limit=limit,
    )
    deliveries = await repository.deliveries_of(session, [a.id for a in alerts])
    by_alert: dict[str, list[DeliveryView]] = {}
    for delivery in deliveries:
        by_alert.setdefault(delivery.alert_id, []).append(DeliveryView(delivery, []))
    return [AlertView(a, by_alert.get(a.id, [])) for a in alerts], next_cursor


async def get_alert(session: AsyncSession, actor: Actor, org_id: str, alert_id: str) -> AlertView:
    """One alert with its deliveries and every attempt of each (the delivery log)."""
    access = await orgs.load_access(session, actor, org_id)
    alert = await repository.alert_in_org(session, org_id, alert_id)
    if alert is None:
        raise NotFound(f"alert {alert_id} not found")
    authorize(access, Action.ALERT_READ, await _node_of(session, access, alert))
    deliveries = await repository.deliveries_of(session, [alert.id])
    attempts = await repository.attempts_of(session, [d.id for d in deliveries])
    by_delivery: dict[str, list[AlertAttempt]] = {}
    for attempt in attempts:
        by_delivery.setdefault(attempt.delivery_id, []).append(attempt)
    return AlertView(alert, [DeliveryView(d, by_delivery.get(d.id, [])) for d in deliveries])


async def send_test_alert(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    channel_id: str,
    *,
    settings: Settings,
    now: datetime,
    resolve: Resolver = system_resolver,
) -> ChannelTestResult:
    """Send a test alert to the channel now (at most the sender's timeout) and say how it went."""
    access = await orgs.load_access(session, actor, org_id)
    channel = await repository.live_channel_in_org(session, org_id, channel_id)
    if channel is None:
        raise NotFound(f"channel {channel_id} not found")
    authorize(access, Action.CHANNEL_MANAGE)
    result = await _send_test(channel, settings, now, resolve, actor)
    outcome = ChannelTestResult(
        result.delivered, result.status_code, result.error, result.duration_ms
    )
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="alert_channel.test",
        target_type="alert_channel",
        target_id=channel.id,
        group_id=access.root[0],
        after={
            "delivered": outcome.delivered,
            "status_code": outcome.status_code,
            "error": outcome.error,
        },
    )
    return outcome


async def _send_test(
    channel: AlertChannel, settings: Settings, now: datetime, resolve: Resolver, actor: Actor
) -> SendResult:
    alert = payloads.Alert(
        id=new_id("alt"),
        event="test",
        severity="info",
        title=f"Test alert for {channel.name}",
        text=f"A test of the channel {channel.name}, sent by {actor.email}. If you can read "
        "this, alerts reach this channel.",
        org_id=channel.org_id,
        occurred_at=now,
        fields=(("Channel", channel.name),),
        details={"channel_id": channel.id, "test": True},
    )
    async with AlertSender(
        settings.outbound_allowed, resolve=resolve, mailer=AlertMailer.configured(settings)
    ) as sender:
        return await sender.send_sealed(
            channel_box(settings.secret),
            org_id=channel.org_id,
            channel_id=channel.id,
            kind=channel.kind,
            sealed=channel.config_sealed,
            alert=alert,
            # Fresh for each test: a receiver that drops repeated keys must not drop a test.
            delivery_id=new_id("dlv"),
            now=now,
        )


async def _node_of(session: AsyncSession, access: OrgAccess, alert: Alert) -> Path:
    """The node an alert happened at: its group's path, the root when it names none."""
    if alert.group_id is None:
        return access.root
    groups = await orgs.groups_of(session, access, [alert.group_id])
    group = groups.get(alert.group_id)
    return access.root if group is None else orgs.path_of(group)
