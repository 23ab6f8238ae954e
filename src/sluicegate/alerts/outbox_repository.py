"""The SQL of raising alerts: the alert row (once per dedupe key), the rules that match, the
context of a budget crossing (budget, scope names, groups' paths) and the outbox rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts.models import Alert, AlertChannel, AlertDelivery, AlertRule
from sluicegate.core.db import dialect_insert
from sluicegate.guard.models import Budget
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.metering.models import UsageEvent, UsageRollup
from sluicegate.metering.rollups import BLOCKED_ERROR_TYPES
from sluicegate.orgs.models import Group, Membership, Organization, RoleBinding


def _insert(session: AsyncSession, table: Any) -> Any:
    return dialect_insert(session.get_bind().dialect.name)(table)


async def insert_alert(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert unless (org, dedupe key) exists; True when this call stored it. A concurrent
    insert of the same key (two drain workers) waits for the other and then stores nothing."""
    statement = (
        _insert(session, Alert)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["org_id", "dedupe_key"])
        .returning(Alert.id)
    )
    return (await session.execute(statement)).first() is not None


async def insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows for channels and for people; one already there (alert and channel, or alert and
    person) is left as it is."""
    if rows:
        statement = _insert(session, AlertDelivery).on_conflict_do_nothing()
        await session.execute(statement, list(rows))


async def enabled_rules(session: AsyncSession, org_id: str, event: str) -> list[AlertRule]:
    statement = select(AlertRule).where(
        AlertRule.org_id == org_id, AlertRule.event == event, AlertRule.enabled.is_(True)
    )
    return list((await session.scalars(statement.order_by(AlertRule.created_at))).all())


async def live_channel_ids(session: AsyncSession, org_id: str, ids: Sequence[str]) -> set[str]:
    if not ids:
        return set()
    statement = select(AlertChannel.id).where(
        AlertChannel.org_id == org_id,
        AlertChannel.id.in_(sorted(set(ids))),
        AlertChannel.enabled.is_(True),
        AlertChannel.deleted_at.is_(None),
    )
    return set((await session.scalars(statement)).all())


async def group_paths(session: AsyncSession, org_id: str, ids: Sequence[str]) -> dict[str, str]:
    if not ids:
        return {}
    statement = select(Group.id, Group.path).where(
        Group.org_id == org_id, Group.id.in_(sorted(set(ids)))
    )
    return {group_id: path for group_id, path in (await session.execute(statement)).all()}


async def root_path(session: AsyncSession, org_id: str) -> str | None:
    statement = select(Group.path).where(Group.org_id == org_id, Group.parent_id.is_(None))
    return (await session.scalars(statement)).first()


async def admins_covering(session: AsyncSession, org_id: str, path: str) -> list[str]:
    """Owners and admins bound at the node of `path` or above it."""
    ancestors = path.split("/")
    statement = (
        select(RoleBinding.user_id)
        .join(
            Membership, (Membership.org_id == org_id) & (Membership.user_id == RoleBinding.user_id)
        )
        .where(
            RoleBinding.org_id == org_id,
            RoleBinding.group_id.in_(ancestors),
            RoleBinding.role.in_(("owner", "admin")),
            Membership.status == "active",
        )
    )
    return sorted(set((await session.scalars(statement)).all()))


async def budgets_by_id(session: AsyncSession, ids: Sequence[str]) -> dict[str, Budget]:
    if not ids:
        return {}
    rows = await session.scalars(select(Budget).where(Budget.id.in_(sorted(set(ids)))))
    return {row.id: row for row in rows}


async def organization(session: AsyncSession, org_id: str) -> Organization | None:
    return await session.get(Organization, org_id)


async def group(session: AsyncSession, org_id: str, group_id: str) -> Group | None:
    found = await session.get(Group, group_id)
    return found if found is not None and found.org_id == org_id else None


async def api_key(session: AsyncSession, org_id: str, key_id: str) -> ApiKey | None:
    found = await session.get(ApiKey, key_id)
    return found if found is not None and found.org_id == org_id else None


async def member(session: AsyncSession, org_id: str, user_id: str) -> tuple[User, str] | None:
    """The user and their home group in the org."""
    statement = (
        select(User, Membership.home_group_id)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.org_id == org_id, User.id == user_id)
    )
    row = (await session.execute(statement)).first()
    return None if row is None else (row[0], row[1])


async def keys_expired_between(
    session: AsyncSession, start: datetime, end: datetime
) -> list[ApiKey]:
    statement = select(ApiKey).where(
        ApiKey.expires_at > start, ApiKey.expires_at <= end, ApiKey.status != "revoked"
    )
    return list((await session.scalars(statement.order_by(ApiKey.expires_at))).all())


# --- what the evaluator measures ----------------------------------------------------------------


async def rules_of_events(session: AsyncSession, events: Sequence[str]) -> list[AlertRule]:
    statement = select(AlertRule).where(
        AlertRule.event.in_(list(events)), AlertRule.enabled.is_(True)
    )
    return list((await session.scalars(statement.order_by(AlertRule.org_id, AlertRule.id))).all())


def _subtree_groups(org_id: str, path: str) -> Any:
    return select(Group.id).where(
        Group.org_id == org_id,
        (Group.path == path) | Group.path.startswith(path + "/", autoescape=True),
    )


async def usage_cost_since(session: AsyncSession, org_id: str, since: datetime) -> int:
    """Settled spend of the org from `since` on, from the quarter-hour rollups."""
    statement = select(func.coalesce(func.sum(UsageRollup.cost_nusd), 0)).where(
        UsageRollup.org_id == org_id, UsageRollup.bucket_start >= since
    )
    return int((await session.execute(statement)).scalar_one())


async def blocked_since(
    session: AsyncSession, org_id: str, since: datetime, scope_path: str | None
) -> int:
    """Requests a guardrail refused from `since` on, in the subtree of `scope_path` (None:
    the whole org)."""
    statement = select(func.count()).where(
        UsageEvent.org_id == org_id,
        UsageEvent.created_at >= since,
        UsageEvent.error_type.in_(sorted(BLOCKED_ERROR_TYPES)),
    )
    if scope_path is not None:
        statement = statement.where(UsageEvent.group_id.in_(_subtree_groups(org_id, scope_path)))
    return int((await session.execute(statement)).scalar_one())


async def key_group(session: AsyncSession, org_id: str, key_id: str) -> tuple[str, str] | None:
    """(group id, owner) of a key."""
    found = await api_key(session, org_id, key_id)
    return None if found is None else (found.group_id, found.owner_user_id)
