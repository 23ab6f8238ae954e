"""The SQL of the tenant tree. Every query names its org, so one tenant never sees another; ids
that are not even of our shape are answered as absent without a query."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.ids import has_prefix
from sluicegate.core.pagination import paginate
from sluicegate.identity.models import User
from sluicegate.orgs.models import (
    PATH_SEPARATOR,
    Group,
    Invitation,
    Membership,
    Organization,
    RoleBinding,
    in_subtrees,
)

# --- organizations ----------------------------------------------------------------------------


async def organization(session: AsyncSession, org_id: str) -> Organization | None:
    if not has_prefix(org_id, "org"):
        return None
    org = await session.get(Organization, org_id)
    return None if org is None or org.deleted_at is not None else org


async def organizations_of(
    session: AsyncSession, user_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Organization], str | None]:
    statement = (
        select(Organization)
        .join(Membership, Membership.org_id == Organization.id)
        .where(
            Membership.user_id == user_id,
            Membership.status == "active",
            Organization.deleted_at.is_(None),
        )
    )
    return await paginate(session, statement, Organization.id, cursor=cursor, limit=limit)


async def add(
    session: AsyncSession, *rows: Organization | Group | Membership | RoleBinding | Invitation
) -> None:
    session.add_all(rows)
    await session.flush()


# --- groups -----------------------------------------------------------------------------------


async def group_in_org(session: AsyncSession, org_id: str, group_id: str) -> Group | None:
    if not has_prefix(group_id, "grp"):
        return None
    return await session.scalar(
        select(Group).where(
            Group.id == group_id, Group.org_id == org_id, Group.deleted_at.is_(None)
        )
    )


async def root_group(session: AsyncSession, org_id: str) -> Group:
    root = await session.scalar(
        select(Group).where(Group.org_id == org_id, Group.parent_id.is_(None))
    )
    if root is None:
        raise LookupError(f"organization {org_id} has no root group")
    return root


async def root_group_ids(session: AsyncSession, org_ids: Sequence[str]) -> dict[str, str]:
    if not org_ids:
        return {}
    rows = await session.execute(
        select(Group.org_id, Group.id).where(
            Group.org_id.in_(set(org_ids)), Group.parent_id.is_(None)
        )
    )
    return {org_id: group_id for org_id, group_id in rows}


async def sibling_named(
    session: AsyncSession, org_id: str, parent_id: str, name: str, *, except_id: str | None
) -> bool:
    statement = select(Group.id).where(
        Group.org_id == org_id,
        Group.parent_id == parent_id,
        Group.name == name,
        Group.deleted_at.is_(None),
    )
    if except_id is not None:
        statement = statement.where(Group.id != except_id)
    return await session.scalar(statement.limit(1)) is not None


async def groups_by_id(session: AsyncSession, org_id: str, ids: Sequence[str]) -> dict[str, Group]:
    if not ids:
        return {}
    rows = await session.scalars(
        select(Group).where(Group.org_id == org_id, Group.id.in_(set(ids)))
    )
    return {group.id: group for group in rows}


async def list_groups(
    session: AsyncSession,
    org_id: str,
    *,
    subtrees: list[str] | None,
    parent_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Group], str | None]:
    statement = select(Group).where(Group.org_id == org_id, Group.deleted_at.is_(None))
    if subtrees is not None:
        statement = statement.where(in_subtrees(Group.path, list(subtrees)))
    if parent_id is not None:
        statement = statement.where(Group.parent_id == parent_id)
    return await paginate(session, statement, Group.id, cursor=cursor, limit=limit)


async def deepest_level_under(session: AsyncSession, group: Group) -> int:
    """The largest level in `group`'s subtree (its own level when it has no descendants)."""
    deepest: int | None = await session.scalar(
        select(func.max(Group.level)).where(
            Group.org_id == group.org_id,
            Group.deleted_at.is_(None),
            in_subtrees(Group.path, [group.path]),
        )
    )
    return int(deepest if deepest is not None else group.level)


async def deepest_level(session: AsyncSession, org_id: str) -> int:
    deepest = await session.scalar(
        select(func.max(Group.level)).where(Group.org_id == org_id, Group.deleted_at.is_(None))
    )
    return int(deepest or 0)


async def move_subtree(session: AsyncSession, group: Group, new_parent: Group) -> None:
    """Re-root `group` and its descendants under `new_parent`: their paths and levels change."""
    old_path, old_level = group.path, group.level
    new_path = f"{new_parent.path}{PATH_SEPARATOR}{group.id}"
    shift = new_parent.level + 1 - old_level
    descendants = await session.scalars(
        select(Group).where(
            Group.org_id == group.org_id,
            Group.path.startswith(old_path + PATH_SEPARATOR, autoescape=True),
        )
    )
    for descendant in descendants:
        descendant.path = new_path + descendant.path[len(old_path) :]
        descendant.level += shift
    group.parent_id = new_parent.id
    group.path = new_path
    group.level += shift
    await session.flush()


async def group_contents(session: AsyncSession, group: Group) -> tuple[int, int]:
    """(live child groups, active members homed here)."""
    children = await session.scalar(
        select(func.count())
        .select_from(Group)
        .where(Group.parent_id == group.id, Group.deleted_at.is_(None))
    )
    members = await session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.home_group_id == group.id, Membership.status == "active")
    )
    return int(children or 0), int(members or 0)


# --- memberships and role bindings ------------------------------------------------------------


async def membership(session: AsyncSession, org_id: str, user_id: str) -> Membership | None:
    if not has_prefix(user_id, "usr"):
        return None
    return await session.scalar(
        select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )


async def bindings_with_paths(
    session: AsyncSession, org_id: str, user_ids: Sequence[str]
) -> list[tuple[RoleBinding, str]]:
    """Role bindings of these users in the org, each with its node's path."""
    if not user_ids:
        return []
    rows = await session.execute(
        select(RoleBinding, Group.path)
        .join(Group, Group.id == RoleBinding.group_id)
        .where(RoleBinding.org_id == org_id, RoleBinding.user_id.in_(set(user_ids)))
        .order_by(RoleBinding.id)
    )
    return [(binding, path) for binding, path in rows]


async def binding(
    session: AsyncSession, org_id: str, user_id: str, group_id: str
) -> RoleBinding | None:
    return await session.scalar(
        select(RoleBinding).where(
            RoleBinding.org_id == org_id,
            RoleBinding.user_id == user_id,
            RoleBinding.group_id == group_id,
        )
    )


async def bindings_at_group(session: AsyncSession, org_id: str, group_id: str) -> list[RoleBinding]:
    return list(
        await session.scalars(
            select(RoleBinding).where(
                RoleBinding.org_id == org_id, RoleBinding.group_id == group_id
            )
        )
    )


async def users_with_only_these_bindings(
    session: AsyncSession, org_id: str, bindings: list[RoleBinding]
) -> list[str]:
    """Of the users holding `bindings`, those who hold no other role in the org."""
    users = {b.user_id for b in bindings}
    if not users:
        return []
    rows = await session.execute(
        select(RoleBinding.user_id, func.count())
        .where(RoleBinding.org_id == org_id, RoleBinding.user_id.in_(users))
        .group_by(RoleBinding.user_id)
    )
    held = {user: int(count) for user, count in rows}
    mine = {user: sum(1 for b in bindings if b.user_id == user) for user in users}
    return sorted(user for user in users if held.get(user, 0) <= mine[user])


async def delete_rows(session: AsyncSession, *rows: RoleBinding) -> None:
    for row in rows:
        await session.delete(row)
    await session.flush()


async def owner_count(session: AsyncSession, org_id: str) -> int:
    """Owners of the org, counted with their owner bindings locked: two owners removing each
    other at once take turns, so the second sees one owner left and is refused. (A removed
    member's bindings are deleted, so every owner binding belongs to an active member.)"""
    owners = await session.scalars(
        select(RoleBinding.user_id)
        .where(RoleBinding.org_id == org_id, RoleBinding.role == "owner")
        .with_for_update()
    )
    return len(set(owners))


async def memberships_of_user(
    session: AsyncSession, user_id: str
) -> list[tuple[Membership, str, list[RoleBinding]]]:
    """A user's active memberships in live orgs, with each org's name and the user's bindings."""
    rows = (
        await session.execute(
            select(Membership, Organization.name)
            .join(Organization, Organization.id == Membership.org_id)
            .where(
                Membership.user_id == user_id,
                Membership.status == "active",
                Organization.deleted_at.is_(None),
            )
            .order_by(Membership.org_id)
        )
    ).all()
    bindings = await session.scalars(
        select(RoleBinding).where(RoleBinding.user_id == user_id).order_by(RoleBinding.id)
    )
    by_org: dict[str, list[RoleBinding]] = {}
    for row in bindings:
        by_org.setdefault(row.org_id, []).append(row)
    return [(membership, name, by_org.get(membership.org_id, [])) for membership, name in rows]


def _members_query(org_id: str, subtrees: list[str] | None, also_user: str | None) -> Select[Any]:
    statement = (
        select(Membership)
        .join(Group, Group.id == Membership.home_group_id)
        .where(Membership.org_id == org_id)
    )
    if subtrees is not None:
        visible = in_subtrees(Group.path, list(subtrees))
        if also_user is not None:
            visible = or_(visible, Membership.user_id == also_user)
        statement = statement.where(visible)
    return statement


async def list_members(
    session: AsyncSession,
    org_id: str,
    *,
    subtrees: list[str] | None,
    also_user: str | None,
    home_subtree: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Membership], str | None]:
    statement = _members_query(org_id, subtrees, also_user)
    if home_subtree is not None:
        statement = statement.where(in_subtrees(Group.path, [home_subtree]))
    if status is not None:
        statement = statement.where(Membership.status == status)
    return await paginate(session, statement, Membership.id, cursor=cursor, limit=limit)


async def users_by_id(session: AsyncSession, user_ids: Sequence[str]) -> dict[str, User]:
    if not user_ids:
        return {}
    rows = await session.scalars(select(User).where(User.id.in_(set(user_ids))))
    return {row.id: row for row in rows}


# --- invitations ------------------------------------------------------------------------------


async def pending_invitation(session: AsyncSession, org_id: str, email: str) -> Invitation | None:
    return await session.scalar(
        select(Invitation).where(
            Invitation.org_id == org_id,
            Invitation.email == email,
            Invitation.status == "pending",
        )
    )


async def invitation_in_org(
    session: AsyncSession, org_id: str, invitation_id: str
) -> Invitation | None:
    if not has_prefix(invitation_id, "inv"):
        return None
    return await session.scalar(
        select(Invitation).where(Invitation.id == invitation_id, Invitation.org_id == org_id)
    )


async def invitation_by_digest(session: AsyncSession, digest: str) -> Invitation | None:
    return await session.scalar(select(Invitation).where(Invitation.digest == digest))


async def list_invitations(
    session: AsyncSession,
    org_id: str,
    *,
    subtrees: list[str] | None,
    status: str | None,
    now: datetime,
    cursor: str | None,
    limit: int,
) -> tuple[list[Invitation], str | None]:
    statement = (
        select(Invitation)
        .join(Group, Group.id == Invitation.group_id)
        .where(Invitation.org_id == org_id)
    )
    if subtrees is not None:
        statement = statement.where(in_subtrees(Group.path, list(subtrees)))
    if status == "pending":
        statement = statement.where(Invitation.status == "pending", Invitation.expires_at > now)
    elif status == "expired":
        statement = statement.where(
            or_(
                Invitation.status == "expired",
                and_(Invitation.status == "pending", Invitation.expires_at <= now),
            )
        )
    elif status is not None:
        statement = statement.where(Invitation.status == status)
    return await paginate(session, statement, Invitation.id, cursor=cursor, limit=limit)


async def close_invitations_to(
    session: AsyncSession, org_id: str, group_id: str, now: datetime
) -> None:
    """Revoke the pending invitations into a group that is going away."""
    await session.execute(
        update(Invitation)
        .where(
            Invitation.org_id == org_id,
            Invitation.group_id == group_id,
            Invitation.status == "pending",
        )
        .values(status="revoked", closed_at=now)
        .execution_options(synchronize_session=False)
    )
