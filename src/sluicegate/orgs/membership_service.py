"""The rules of members and their roles: listing, home groups, granting and taking back roles,
removing a member (their keys are disabled, their usage history stays)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.events import announce
from sluicegate.core.ids import new_id
from sluicegate.identity.models import User
from sluicegate.orgs import repository
from sluicegate.orgs.authorize import (
    ADMIN,
    OWNER,
    VIEWER,
    Action,
    Binding,
    Grant,
    MemberTarget,
    OrgAccess,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.events import MemberRemoved
from sluicegate.orgs.models import PATH_SEPARATOR, Group, Membership, RoleBinding
from sluicegate.orgs.service import group_of, load_access, path_of
from sluicegate.orgs.tree_keys import tree_keys


@dataclass(frozen=True, slots=True)
class MemberView:
    """A membership with what lists show of it."""

    membership: Membership
    user: User
    bindings: tuple[RoleBinding, ...]
    key_count: int


# --- targets ----------------------------------------------------------------------------------


async def member_target(session: AsyncSession, org_id: str, user_id: str) -> MemberTarget | None:
    """A member (active or removed) as the authorization rules see them."""
    membership = await repository.membership(session, org_id, user_id)
    if membership is None:
        return None
    return await _target_of(session, membership)


async def active_member_target(
    session: AsyncSession, org_id: str, user_id: str
) -> MemberTarget | None:
    """An active member as the authorization rules see them; None for anyone else."""
    membership = await repository.membership(session, org_id, user_id)
    if membership is None or membership.status != "active":
        return None
    return await _target_of(session, membership)


async def _target_of(session: AsyncSession, membership: Membership) -> MemberTarget:
    homes = await repository.groups_by_id(session, membership.org_id, [membership.home_group_id])
    rows = await repository.bindings_with_paths(session, membership.org_id, [membership.user_id])
    return MemberTarget(
        membership.user_id,
        path_of(homes[membership.home_group_id]),
        tuple(
            Binding(row.group_id, tuple(path.split(PATH_SEPARATOR)), row.role) for row, path in rows
        ),
    )


async def _active_member(
    session: AsyncSession, access: OrgAccess, user_id: str
) -> tuple[Membership, MemberTarget]:
    membership = await repository.membership(session, access.org_id, user_id)
    if membership is None or membership.status != "active":
        raise NotFound(f"member {user_id} not found")
    return membership, await _target_of(session, membership)


# --- reading ------------------------------------------------------------------------------------


async def list_members(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    group_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[MemberView], str | None]:
    """Members homed in the subtrees the caller administers or views (everyone, for owners),
    and always the caller. `group_id` narrows to members homed in that group's subtree."""
    access = await load_access(session, actor, org_id)
    home_subtree = None
    if group_id is not None:
        home_subtree = (await group_of(session, access, group_id)).path
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    memberships, next_cursor = await repository.list_members(
        session,
        org_id,
        subtrees=None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees],
        also_user=actor.user_id,
        home_subtree=home_subtree,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return await _views(session, org_id, memberships), next_cursor


async def get_member(session: AsyncSession, actor: Actor, org_id: str, user_id: str) -> MemberView:
    access = await load_access(session, actor, org_id)
    membership = await repository.membership(session, org_id, user_id)
    if membership is None:
        raise NotFound(f"member {user_id} not found")
    authorize(access, Action.MEMBER_READ, await _target_of(session, membership))
    return await _view(session, membership)


async def memberships_of(
    session: AsyncSession, user_id: str
) -> list[tuple[Membership, str, list[RoleBinding]]]:
    """The caller's own active memberships, with each org's name and their bindings there."""
    return await repository.memberships_of_user(session, user_id)


async def _view(session: AsyncSession, membership: Membership) -> MemberView:
    return (await _views(session, membership.org_id, [membership]))[0]


async def _record(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    action: str,
    user_id: str,
    group_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """The audit event of a change to a member (target type "member")."""
    await record_action(
        session,
        actor,
        org_id=org_id,
        action=action,
        target_type="member",
        target_id=user_id,
        group_id=group_id,
        before=before,
        after=after,
    )


async def key_counts(session: AsyncSession, org_id: str, user_ids: Sequence[str]) -> dict[str, int]:
    """Keys that are not revoked, per owner (for callers that have authorized the read)."""
    return await tree_keys(session).count_per_owner(session, org_id, user_ids)


async def _views(
    session: AsyncSession, org_id: str, memberships: list[Membership]
) -> list[MemberView]:
    user_ids = [m.user_id for m in memberships]
    users = await repository.users_by_id(session, user_ids)
    bindings: dict[str, list[RoleBinding]] = {}
    for row, _path in await repository.bindings_with_paths(session, org_id, user_ids):
        bindings.setdefault(row.user_id, []).append(row)
    counts = await tree_keys(session).count_per_owner(session, org_id, user_ids)
    return [
        MemberView(
            m, users[m.user_id], tuple(bindings.get(m.user_id, ())), counts.get(m.user_id, 0)
        )
        for m in memberships
    ]


# --- changing -----------------------------------------------------------------------------------


async def change_home_group(
    session: AsyncSession, actor: Actor, org_id: str, user_id: str, home_group_id: str
) -> MemberView:
    """Move a member's home (where their spend is attributed). The caller must manage the member
    both where they are and where they would be."""
    access = await load_access(session, actor, org_id)
    membership, target = await _active_member(session, access, user_id)
    authorize(access, Action.MEMBER_MANAGE, target)
    new_home = await group_of(session, access, home_group_id, field="home_group_id")
    moved = MemberTarget(target.user_id, path_of(new_home), target.bindings)
    authorize(access, Action.MEMBER_MANAGE, moved)
    before = {"home_group_id": membership.home_group_id}
    membership.home_group_id = new_home.id
    await session.flush()
    await _record(
        session,
        actor,
        org_id,
        "member.update",
        user_id,
        new_home.id,
        before=before,
        after={"home_group_id": new_home.id},
    )
    return await _view(session, membership)


async def set_role(
    session: AsyncSession, actor: Actor, org_id: str, user_id: str, *, group_id: str, role: str
) -> MemberView:
    """Bind `role` to the member at `group_id`, replacing the role they held there."""
    access = await load_access(session, actor, org_id)
    membership, target = await _active_member(session, access, user_id)
    group = await group_of(session, access, group_id)
    authorize(access, Action.MEMBER_MANAGE, target)
    check_role_placement(role, group)
    authorize(access, Action.ROLE_GRANT, Grant(role, path_of(group)))
    existing = await repository.binding(session, org_id, user_id, group.id)
    if existing is not None:
        authorize(access, Action.ROLE_GRANT, Grant(existing.role, path_of(group)))
        if existing.role == role:
            return await _view(session, membership)
        if existing.role == OWNER:
            await _keep_an_owner(session, org_id)
        before = {"group_id": group.id, "role": existing.role}
        existing.role = role
        await session.flush()
    else:
        before = None
        await repository.add(
            session,
            RoleBinding(
                id=new_id("rb"), org_id=org_id, group_id=group.id, user_id=user_id, role=role
            ),
        )
    await _record(
        session,
        actor,
        org_id,
        "role.grant",
        user_id,
        group.id,
        before=before,
        after={"group_id": group.id, "role": role},
    )
    return await _view(session, membership)


async def remove_role(
    session: AsyncSession, actor: Actor, org_id: str, user_id: str, *, group_id: str
) -> MemberView:
    """Take back the role the member holds at `group_id`. A member keeps at least one role
    (remove the member instead), and the org keeps at least one owner."""
    access = await load_access(session, actor, org_id)
    membership, target = await _active_member(session, access, user_id)
    group = await group_of(session, access, group_id)
    existing = await repository.binding(session, org_id, user_id, group.id)
    if existing is None:
        raise NotFound(f"member {user_id} holds no role at group {group.id}")
    authorize(access, Action.MEMBER_MANAGE, target)
    authorize(access, Action.ROLE_GRANT, Grant(existing.role, path_of(group)))
    if len(target.bindings) == 1:
        raise Conflict(
            "this is the member's only role; remove the member instead "
            f"(DELETE /api/v1/orgs/{org_id}/members/{user_id})"
        )
    if existing.role == OWNER:
        await _keep_an_owner(session, org_id)
    await repository.delete_rows(session, existing)
    await _record(
        session,
        actor,
        org_id,
        "role.revoke",
        user_id,
        group.id,
        before={"group_id": group.id, "role": existing.role},
    )
    return await _view(session, membership)


async def remove_member(
    session: AsyncSession, actor: Actor, org_id: str, user_id: str, now: datetime
) -> list[str]:
    """Remove a member (or leave, for oneself): their roles end, their keys are disabled at once
    on every worker, their usage history stays. Returns the ids of the keys disabled."""
    access = await load_access(session, actor, org_id)
    membership, target = await _active_member(session, access, user_id)
    authorize(access, Action.MEMBER_REMOVE, target)
    if any(b.role == OWNER for b in target.bindings):
        await _keep_an_owner(session, org_id)
    bindings = [row for row, _ in await repository.bindings_with_paths(session, org_id, [user_id])]
    await repository.delete_rows(session, *bindings)
    disabled = await tree_keys(session).disable(session, org_id, owner_user_id=user_id)
    membership.status, membership.removed_at = "removed", now
    await session.flush()
    await _record(
        session,
        actor,
        org_id,
        "member.remove",
        user_id,
        membership.home_group_id,
        before={
            "home_group_id": membership.home_group_id,
            "roles": [{"group_id": b.group_id, "role": b.role} for b in bindings],
        },
        after={"status": "removed", "disabled_keys": disabled},
    )
    await announce(
        session,
        MemberRemoved(org_id, user_id, membership.home_group_id, tuple(disabled), actor, now),
    )
    return disabled


# --- joining (used by invitations) ----------------------------------------------------------------


async def join(
    session: AsyncSession, org_id: str, user_id: str, *, home: Group, role: str
) -> Membership:
    """Make `user_id` an active member homed at `home` with `role` bound there. A removed member
    comes back on the same membership row."""
    membership = await repository.membership(session, org_id, user_id)
    if membership is not None and membership.status == "active":
        raise Conflict("this person is already a member of the organization")
    if membership is None:
        membership = Membership(
            id=new_id("mem"), org_id=org_id, user_id=user_id, home_group_id=home.id
        )
        await repository.add(session, membership)
    else:
        membership.status, membership.removed_at = "active", None
        membership.home_group_id = home.id
    await repository.add(
        session,
        RoleBinding(id=new_id("rb"), org_id=org_id, group_id=home.id, user_id=user_id, role=role),
    )
    return membership


def check_role_placement(role: str, group: Group) -> None:
    if role == OWNER and group.parent_id is not None:
        raise InvalidInput(
            "role: the owner role is bound at the organization's root group only",
            details={"field": "role"},
        )


async def _keep_an_owner(session: AsyncSession, org_id: str) -> None:
    if await repository.owner_count(session, org_id) <= 1:
        raise Conflict("this is the organization's last owner; make someone else owner first")
