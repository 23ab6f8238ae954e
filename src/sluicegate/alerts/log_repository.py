"""The SQL of alert deliveries: the delivery worker's claims and outcomes (with the people it
mails), and the reads of the alert log (alerts, their deliveries, every attempt) that the admin
API answers from."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.core.pagination import paginate
from sluicegate.identity.models import User
from sluicegate.orgs.models import Group, Membership, Organization, in_subtrees


@dataclass(frozen=True, slots=True)
class Recipient:
    """A person a delivery is for, as they are now in the delivery's org."""

    email: str
    frozen: bool
    member: bool  # an active membership of the org
    org_deleted: bool


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
    if not channel_ids:
        return {}
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


async def recipients(
    session: AsyncSession, pairs: Collection[tuple[str, str]]
) -> dict[tuple[str, str], Recipient]:
    """(org id, user id) -> the person now; a user who does not exist is left out."""
    if not pairs:
        return {}
    user_ids = sorted({user_id for _, user_id in pairs})
    org_ids = sorted({org_id for org_id, _ in pairs})
    users = {
        user_id: (email, status)
        for user_id, email, status in (
            await session.execute(
                select(User.id, User.email, User.status).where(User.id.in_(user_ids))
            )
        ).all()
    }
    members = set(
        (
            await session.execute(
                select(Membership.org_id, Membership.user_id).where(
                    Membership.org_id.in_(org_ids),
                    Membership.user_id.in_(user_ids),
                    Membership.status == "active",
                )
            )
        ).all()
    )
    deleted = set(
        await session.scalars(
            select(Organization.id).where(
                Organization.id.in_(org_ids), Organization.deleted_at.is_not(None)
            )
        )
    )
    found = {}
    for org_id, user_id in pairs:
        if user_id in users:
            email, status = users[user_id]
            found[(org_id, user_id)] = Recipient(
                email=email,
                frozen=status == "frozen",
                member=(org_id, user_id) in members,
                org_deleted=org_id in deleted,
            )
    return found


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
