"""Groups of an organization's tree: create, read, list, rename or move, delete (with what
hangs below them). Every function loads the caller's access first, as orgs/service.py does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.errors import Conflict, InvalidInput
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import GROUP_TOPIC
from sluicegate.orgs import repository
from sluicegate.orgs.authorize import (
    ADMIN,
    MEMBER,
    VIEWER,
    Action,
    authorize,
    readable_subtrees,
    within,
)
from sluicegate.orgs.models import PATH_SEPARATOR, Group

# A path is stored in 400 characters and an id with its separator takes 31 of them.
from sluicegate.orgs.service import (
    clean_name,
    group_of,
    group_view,
    load_access,
    name_is_free,
    organization_of,
    path_of,
)
from sluicegate.orgs.tree_keys import tree_keys


async def create_group(
    session: AsyncSession, actor: Actor, org_id: str, *, name: str, parent_id: str | None = None
) -> Group:
    """A group under `parent_id` (the root when None), no deeper than the org allows."""
    access = await load_access(session, actor, org_id)
    if parent_id is None:
        parent = await repository.root_group(session, org_id)
    else:
        parent = await group_of(session, access, parent_id, field="parent_id")
    authorize(access, Action.GROUP_CREATE, path_of(parent))
    org = await organization_of(session, access)
    level = parent.level + 1
    if level > org.max_level:
        raise InvalidInput(
            f"parent_id: a group under {parent.id} would be at level {level}, deeper than this "
            f"organization allows (maximum level {org.max_level})",
            details={"field": "parent_id", "max_level": org.max_level},
        )
    label = clean_name(name)
    await name_is_free(session, org_id, parent.id, label)
    group_id = new_id("grp")
    group = Group(
        id=group_id,
        org_id=org_id,
        parent_id=parent.id,
        name=label,
        level=level,
        path=f"{parent.path}{PATH_SEPARATOR}{group_id}",
    )
    await repository.add(session, group)
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="group.create",
        target_type="group",
        target_id=group.id,
        group_id=group.id,
        after=group_view(group),
    )
    return group


async def get_group(session: AsyncSession, actor: Actor, org_id: str, group_id: str) -> Group:
    access = await load_access(session, actor, org_id)
    group = await group_of(session, access, group_id)
    authorize(access, Action.GROUP_READ, path_of(group))
    return group


async def list_groups(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    parent_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Group], str | None]:
    """The groups in the subtrees where the caller holds a role (all of them, for owners)."""
    access = await load_access(session, actor, org_id)
    subtrees = readable_subtrees(access, ADMIN, VIEWER, MEMBER)
    return await repository.list_groups(
        session,
        org_id,
        subtrees=None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees],
        parent_id=parent_id,
        cursor=cursor,
        limit=limit,
    )


async def update_group(
    session: AsyncSession, actor: Actor, org_id: str, group_id: str, changes: dict[str, Any]
) -> Group:
    """Rename (`name`) or move (`parent_id`) a group. A move takes the whole subtree along,
    never under the group itself or its descendants, and never deeper than the org allows."""
    access = await load_access(session, actor, org_id)
    group = await group_of(session, access, group_id)
    authorize(access, Action.GROUP_MANAGE, path_of(group))
    if group.parent_id is None:
        raise InvalidInput(
            "group_id: the root group is the organization itself; rename it through "
            "PATCH /api/v1/orgs/{org_id}, and it cannot move",
            details={"field": "group_id"},
        )
    before = group_view(group)
    label = clean_name(changes["name"]) if changes.get("name") is not None else group.name
    moving = changes.get("parent_id") is not None and changes["parent_id"] != group.parent_id
    parent_id = changes["parent_id"] if moving else group.parent_id
    if moving:
        new_parent = await group_of(session, access, parent_id, field="parent_id")
        authorize(access, Action.GROUP_CREATE, path_of(new_parent))
        if within(path_of(new_parent), path_of(group)):
            raise InvalidInput(
                "parent_id: a group cannot move under itself or one of its own descendants",
                details={"field": "parent_id"},
            )
        org = await organization_of(session, access)
        depth = await repository.deepest_level_under(session, group) - group.level
        deepest = new_parent.level + 1 + depth
        if deepest > org.max_level:
            raise InvalidInput(
                f"parent_id: under {new_parent.id} this group's subtree would reach level "
                f"{deepest}, deeper than this organization allows (maximum level "
                f"{org.max_level})",
                details={"field": "parent_id", "max_level": org.max_level},
            )
    if moving or label != group.name:
        await name_is_free(session, org_id, parent_id, label, except_id=group.id)
    group.name = label
    if moving:
        await repository.move_subtree(session, group, new_parent)
        invalidate_after_commit(session, GROUP_TOPIC, group.id)
    await session.flush()
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="group.move" if moving else "group.update",
        target_type="group",
        target_id=group.id,
        group_id=group.id,
        before=before,
        after=group_view(group),
    )
    return group


async def delete_group(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    group_id: str,
    *,
    disable_keys: bool,
    now: datetime,
) -> list[str]:
    """Delete an empty group: no subgroups, no members homed in it and no keys in it, unless
    `disable_keys`, which disables its keys first. Role bindings at the group end with it and
    pending invitations to it are revoked. Returns the ids of the keys it disabled."""
    access = await load_access(session, actor, org_id)
    group = await group_of(session, access, group_id)
    authorize(access, Action.GROUP_MANAGE, path_of(group))
    if group.parent_id is None:
        raise InvalidInput(
            "group_id: the root group cannot be deleted; delete the organization instead",
            details={"field": "group_id"},
        )
    children, members = await repository.group_contents(session, group)
    keys = await tree_keys(session).count_in_group(session, group.id)
    if children or members or (keys and not disable_keys):
        parts = [
            f"{count} {what if count == 1 else what + 's'}"
            for count, what in ((children, "subgroup"), (members, "member"), (keys, "key"))
            if count
        ]
        hint = "move or delete the subgroups and move the members first"
        if keys and not children and not members:
            hint = "pass disable_keys=true to disable its keys and delete it anyway"
        raise Conflict(
            f"group {group.id} is not empty: it holds {', '.join(parts)}; {hint}",
            details={"subgroups": children, "members": members, "keys": keys},
        )
    bindings = await repository.bindings_at_group(session, org_id, group.id)
    stranded = await repository.users_with_only_these_bindings(session, org_id, bindings)
    if stranded:
        raise Conflict(
            f"group {group.id} holds the only role of {len(stranded)} member(s); give them a role "
            "elsewhere or remove them first",
            details={"members": stranded},
        )
    disabled = await tree_keys(session).disable(session, org_id, group_id=group.id)
    await repository.delete_rows(session, *bindings)
    await repository.close_invitations_to(session, org_id, group.id, now)
    group.deleted_at = now
    await session.flush()
    invalidate_after_commit(session, GROUP_TOPIC, group.id)
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="group.delete",
        target_type="group",
        target_id=group.id,
        group_id=group.id,
        before=group_view(group),
        after={
            "disabled_keys": disabled,
            "removed_roles": [{"user_id": b.user_id, "role": b.role} for b in bindings],
        },
    )
    return disabled
