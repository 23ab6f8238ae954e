"""The SQL of alert deliveries: the delivery worker's claims and outcomes, and the reads of the
alert log (alerts, their deliveries, every attempt) that the admin API answers from."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.core.pagination import paginate
from sluicegate.orgs.models import Group, Organization, in_subtrees

# --- the worker ------------------------------------------------------------------------------


async def due_deliveries(session: AsyncSession, now: datetime, limit: int) -> list[AlertDelivery]:
    """Pending deliveries due now whose lease (if any) ran out, oldest first, locked. On
    Postgres rows another worker has locked are skipped, not waited for: each worker claims
    its own rows. SQLite renders no lock (one process, whose units of work take turns)."""
    statement = (
        select(AlertDelivery)
        .where(
            AlertDelivery.status == "pending",
            AlertDelivery.next_attempt_at <= now,
            or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until < now),
        )
        .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(statement))


async def channels_for_update(
    session: AsyncSession, channel_ids: Collection[str]
) -> dict[str, tuple[AlertChannel, bool]]:
    """The channels by id, locked (their circuit breakers change under the lock), each with
    whether its org was deleted. Locked in id order, so two workers never wait on each other
    in a circle."""
    statement = (
        select(AlertChannel, Organization.deleted_at.is_not(None))
        .join(Organization, Organization.id == AlertChannel.org_id)
        .where(AlertChannel.id.in_(sorted(channel_ids)))
        .order_by(AlertChannel.id)
        .with_for_update(of=AlertChannel)
    )
    rows = await session.execute(statement)
    return {channel.id: (channel, bool(org_gone)) for channel, org_gone in rows.all()}


async def channel_for_update(session: AsyncSession, channel_id: str) -> AlertChannel | None:
    return await session.scalar(
        select(AlertChannel).where(AlertChannel.id == channel_id).with_for_update()
    )


async def alerts_by_id(session: AsyncSession, alert_ids: Collection[str]) -> dict[str, Alert]:
    rows = await session.scalars(select(Alert).where(Alert.id.in_(sorted(alert_ids))))
    return {alert.id: alert for alert in rows}


async def delivery_for_update(session: AsyncSession, delivery_id: str) -> AlertDelivery | None:
    return await session.scalar(
        select(AlertDelivery).where(AlertDelivery.id == delivery_id).with_for_update()
    )


async def deliveries_for_update(
    session: AsyncSession, delivery_ids: Collection[str]
) -> list[AlertDelivery]:
    statement = (
        select(AlertDelivery)
        .where(AlertDelivery.id.in_(sorted(delivery_ids)))
        .order_by(AlertDelivery.id)
        .with_for_update()
    )
    return list(await session.scalars(statement))


async def add_attempt(session: AsyncSession, attempt: AlertAttempt) -> None:
    session.add(attempt)
    await session.flush()


# --- the alert log ---------------------------------------------------------------------------


def _node_path(root: str) -> ColumnElement[str]:
    """The path of the node an alert happened at: its group's, the org root's when it names
    none (or a group this org does not have)."""
    return func.coalesce(Group.path, root)


async def list_alerts(
    session: AsyncSession,
    org_id: str,
    *,
    root: str,
    subtrees: list[str] | None,
    event: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Alert], str | None]:
    """The org's alerts at nodes inside `subtrees` (paths; None: all of them), newest first."""
    statement = select(Alert).where(Alert.org_id == org_id)
    if subtrees is not None:
        statement = statement.outerjoin(
            Group, (Group.id == Alert.group_id) & (Group.org_id == Alert.org_id)
        ).where(in_subtrees(_node_path(root), subtrees))
    if event is not None:
        statement = statement.where(Alert.event == event)
    if since is not None:
        statement = statement.where(Alert.occurred_at >= since)
    return await paginate(session, statement, Alert.id, cursor=cursor, limit=limit, descending=True)


async def alert_in_org(session: AsyncSession, org_id: str, alert_id: str) -> Alert | None:
    return await session.scalar(select(Alert).where(Alert.id == alert_id, Alert.org_id == org_id))


async def deliveries_of(session: AsyncSession, alert_ids: Collection[str]) -> list[AlertDelivery]:
    if not alert_ids:
        return []
    statement = (
        select(AlertDelivery)
        .where(AlertDelivery.alert_id.in_(sorted(alert_ids)))
        .order_by(AlertDelivery.created_at, AlertDelivery.id)
    )
    return list(await session.scalars(statement))


async def attempts_of(session: AsyncSession, delivery_ids: Collection[str]) -> list[AlertAttempt]:
    if not delivery_ids:
        return []
    statement = (
        select(AlertAttempt)
        .where(AlertAttempt.delivery_id.in_(sorted(delivery_ids)))
        .order_by(AlertAttempt.delivery_id, AlertAttempt.attempt)
    )
    return list(await session.scalars(statement))


async def live_channel_in_org(
    session: AsyncSession, org_id: str, channel_id: str
) -> AlertChannel | None:
    """A channel of the org that was not deleted."""
    return await session.scalar(
        select(AlertChannel).where(
            AlertChannel.id == channel_id,
            AlertChannel.org_id == org_id,
            AlertChannel.deleted_at.is_(None),
        )
    )
