"""The SQL of the alerts admin API: channels and rules of one org (the tenant filter in every
query), the members a rule may name, and the outbox rows a deleted channel leaves behind."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts.models import AlertChannel, AlertDelivery, AlertRule
from sluicegate.core.ids import has_prefix
from sluicegate.core.pagination import paginate
from sluicegate.orgs.models import Group, Membership, in_subtrees

CHANNEL_PREFIX = "chn"
RULE_PREFIX = "arl"


async def add(session: AsyncSession, *rows: AlertChannel | AlertRule) -> None:
    session.add_all(rows)
    await session.flush()


async def delete_row(session: AsyncSession, row: AlertRule) -> None:
    await session.delete(row)
    await session.flush()


# --- channels ----------------------------------------------------------------------------------


async def channel_in_org(
    session: AsyncSession, org_id: str, channel_id: str
) -> AlertChannel | None:
    """A channel of the org that is not deleted."""
    if not has_prefix(channel_id, CHANNEL_PREFIX):
        return None
    return await session.scalar(
        select(AlertChannel).where(
            AlertChannel.id == channel_id,
            AlertChannel.org_id == org_id,
            AlertChannel.deleted_at.is_(None),
        )
    )


async def channel_named(
    session: AsyncSession, org_id: str, name: str, *, except_id: str | None = None
) -> bool:
    statement = select(AlertChannel.id).where(
        AlertChannel.org_id == org_id,
        AlertChannel.name == name,
        AlertChannel.deleted_at.is_(None),
    )
    if except_id is not None:
        statement = statement.where(AlertChannel.id != except_id)
    return await session.scalar(statement.limit(1)) is not None


async def list_channels(
    session: AsyncSession, org_id: str, *, cursor: str | None, limit: int
) -> tuple[list[AlertChannel], str | None]:
    statement = select(AlertChannel).where(
        AlertChannel.org_id == org_id, AlertChannel.deleted_at.is_(None)
    )
    return await paginate(session, statement, AlertChannel.id, cursor=cursor, limit=limit)


async def live_channel_ids(session: AsyncSession, org_id: str, ids: Sequence[str]) -> set[str]:
    """Those of `ids` that are channels of the org, not deleted (enabled or not)."""
    wanted = sorted({i for i in ids if has_prefix(i, CHANNEL_PREFIX)})
    if not wanted:
        return set()
    statement = select(AlertChannel.id).where(
        AlertChannel.org_id == org_id,
        AlertChannel.id.in_(wanted),
        AlertChannel.deleted_at.is_(None),
    )
    return set((await session.scalars(statement)).all())


async def cancel_pending_deliveries(session: AsyncSession, org_id: str, channel_id: str) -> int:
    """Pending outbox rows of the channel become 'cancelled'; how many there were."""
    result = await session.execute(
        update(AlertDelivery)
        .where(
            AlertDelivery.org_id == org_id,
            AlertDelivery.channel_id == channel_id,
            AlertDelivery.status == "pending",
        )
        .values(status="cancelled", claimed_until=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def rules_sending_to(session: AsyncSession, org_id: str, channel_id: str) -> list[AlertRule]:
    """The org's rules that name the channel. An org holds a handful of rules, and a JSON
    containment test differs between Postgres and SQLite, so the filter runs here."""
    rules = await session.scalars(select(AlertRule).where(AlertRule.org_id == org_id))
    return [rule for rule in rules if channel_id in (rule.channel_ids or [])]


# --- rules -----------------------------------------------------------------------------------


async def rule_in_org(session: AsyncSession, org_id: str, rule_id: str) -> AlertRule | None:
    if not has_prefix(rule_id, RULE_PREFIX):
        return None
    return await session.scalar(
        select(AlertRule).where(AlertRule.id == rule_id, AlertRule.org_id == org_id)
    )


async def list_rules(
    session: AsyncSession,
    org_id: str,
    *,
    subtrees: list[str] | None,
    event: str | None,
    scope_group_id: str | None,
    whole_org_only: bool,
    cursor: str | None,
    limit: int,
) -> tuple[list[AlertRule], str | None]:
    """Rules of the org. `subtrees` (paths; None: every rule) keeps the rules scoped to a group
    inside one of them: whoever reads the org root is given None. `whole_org_only` keeps the
    rules of the whole org, `scope_group_id` those of exactly that group."""
    statement = select(AlertRule).where(AlertRule.org_id == org_id)
    if subtrees is not None:
        # Every rule's group is in the same org (the id came from a check of this org's groups).
        statement = statement.join(Group, Group.id == AlertRule.scope_group_id).where(
            in_subtrees(Group.path, subtrees)
        )
    if event is not None:
        statement = statement.where(AlertRule.event == event)
    if whole_org_only:
        statement = statement.where(AlertRule.scope_group_id.is_(None))
    elif scope_group_id is not None:
        statement = statement.where(AlertRule.scope_group_id == scope_group_id)
    return await paginate(session, statement, AlertRule.id, cursor=cursor, limit=limit)


# --- recipients ----------------------------------------------------------------------------------


async def active_member_ids(
    session: AsyncSession, org_id: str, user_ids: Sequence[str]
) -> set[str]:
    """Those of `user_ids` who are active members of the org."""
    wanted = sorted({u for u in user_ids if has_prefix(u, "usr")})
    if not wanted:
        return set()
    statement = select(Membership.user_id).where(
        Membership.org_id == org_id,
        Membership.user_id.in_(wanted),
        Membership.status == "active",
    )
    return set((await session.scalars(statement)).all())
