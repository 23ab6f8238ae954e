"""The rules of organizations and their group tree, and loading a caller's access to an org.

Every function that acts for a caller loads their access first (404 when they are not in the
org), asks orgs.authorize, validates, changes state and records the audit event in the same
transaction. Services flush, never commit; the caller's unit of work commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import after_commit, invalidate_after_commit
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import GROUP_TOPIC, GUARD_TOPIC, KEY_TOPIC, ORG_TOPIC
from sluicegate.core.timezones import zone
from sluicegate.guard.counters import GuardStore, credit_counter
from sluicegate.metering.rollups import rebuild_daily_rollups
from sluicegate.orgs import repository
from sluicegate.orgs.authorize import (
    ADMIN,
    MEMBER,
    VIEWER,
    Action,
    Binding,
    OrgAccess,
    Path,
    authorize,
    readable_subtrees,
    within,
)
from sluicegate.orgs.models import PATH_SEPARATOR, Group, Membership, Organization, RoleBinding

# A path is stored in 400 characters and an id with its separator takes 31 of them.
MAX_LEVEL_LIMIT = 10
NAME_LIMIT = 200


def path_of(group: Group) -> Path:
    """Group ids from the org root down to `group` itself."""
    return tuple(group.path.split(PATH_SEPARATOR))


# --- access ------------------------------------------------------------------------------------


async def load_access(session: AsyncSession, actor: Actor, org_id: str) -> OrgAccess:
    """The caller's roles in the org. 404 (never 403) when the org does not exist, was deleted,
    or the caller is not an active member: another tenant's ids look like unknown ids."""
    org = await repository.organization(session, org_id)
    membership = await repository.membership(session, org_id, actor.user_id) if org else None
    if org is None or membership is None or membership.status != "active":
        raise NotFound(f"organization {org_id} not found")
    rows = await repository.bindings_with_paths(session, org_id, [actor.user_id])
    bindings = tuple(
        Binding(row.group_id, tuple(path.split(PATH_SEPARATOR)), row.role) for row, path in rows
    )
    # Every path starts at the root, so a binding names it without another query.
    if bindings:
        root = bindings[0].path[:1]
    else:
        root = path_of(await repository.root_group(session, org_id))
    return OrgAccess(actor, org_id, root, bindings)


async def organization_of(session: AsyncSession, access: OrgAccess) -> Organization:
    org = await repository.organization(session, access.org_id)
    if org is None:
        raise NotFound(f"organization {access.org_id} not found")
    return org


async def group_of(
    session: AsyncSession, access: OrgAccess, group_id: str, *, field: str = "group_id"
) -> Group:
    """A live group of the caller's org, or 404 naming the field that held its id."""
    group = await repository.group_in_org(session, access.org_id, group_id)
    if group is None:
        raise NotFound(f"group {group_id} not found", details={"field": field})
    return group


async def groups_of(
    session: AsyncSession, access: OrgAccess, group_ids: list[str]
) -> dict[str, Group]:
    """Groups of the caller's org by id, deleted ones included (keys and events still name
    them)."""
    return await repository.groups_by_id(session, access.org_id, group_ids)


async def group_is_live(session: AsyncSession, org_id: str, group_id: str) -> bool:
    return await repository.group_in_org(session, org_id, group_id) is not None


# --- organizations -------------------------------------------------------------------------------


async def create_organization(
    session: AsyncSession, actor: Actor, *, name: str, timezone: str = "UTC"
) -> Organization:
    """A new org with its root group; the caller becomes a member homed at the root, its owner."""
    org = Organization(id=new_id("org"), name=clean_name(name), timezone=_valid_timezone(timezone))
    root_id = new_id("grp")
    root = Group(id=root_id, org_id=org.id, parent_id=None, name=org.name, level=0, path=root_id)
    await repository.add(session, org)
    await repository.add(session, root)
    membership = Membership(
        id=new_id("mem"), org_id=org.id, user_id=actor.user_id, home_group_id=root.id
    )
    owner = RoleBinding(
        id=new_id("rb"), org_id=org.id, group_id=root.id, user_id=actor.user_id, role="owner"
    )
    await repository.add(session, membership, owner)
    await record_action(
        session,
        actor,
        org_id=org.id,
        action="org.create",
        target_type="organization",
        target_id=org.id,
        group_id=root.id,
        after=org_view(org),
    )
    return org


async def get_organization(session: AsyncSession, actor: Actor, org_id: str) -> Organization:
    access = await load_access(session, actor, org_id)
    authorize(access, Action.ORG_READ)
    return await organization_of(session, access)


async def list_organizations(
    session: AsyncSession, actor: Actor, *, cursor: str | None, limit: int
) -> tuple[list[Organization], str | None]:
    """The orgs the caller is an active member of."""
    return await repository.organizations_of(session, actor.user_id, cursor=cursor, limit=limit)


async def root_group_ids(session: AsyncSession, org_ids: list[str]) -> dict[str, str]:
    return await repository.root_group_ids(session, org_ids)


async def update_organization(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    changes: dict[str, Any],
    *,
    store: GuardStore,
) -> Organization:
    """Change settings: name, timezone, max_level, topup_max_level, members_see_org_feed,
    credit_enforced. `store` is the guard's counter store (the credit counter is dropped when
    credit enforcement changes)."""
    access = await load_access(session, actor, org_id)
    authorize(access, Action.ORG_UPDATE)
    org = await organization_of(session, access)
    before = org_view(org)
    timezone, credit_enforced = org.timezone, org.credit_enforced
    if "name" in changes:
        org.name = clean_name(changes["name"])
        root = await repository.root_group(session, org.id)
        root.name = org.name
    if "timezone" in changes:
        org.timezone = _valid_timezone(changes["timezone"])
    max_level = changes.get("max_level", org.max_level)
    if "max_level" in changes:
        if not 1 <= max_level <= MAX_LEVEL_LIMIT:
            raise InvalidInput(
                f"max_level: must be 1 to {MAX_LEVEL_LIMIT}", details={"field": "max_level"}
            )
        deepest = await repository.deepest_level(session, org.id)
        if max_level < deepest:
            raise InvalidInput(
                f"max_level: groups already reach level {deepest}; move or delete them before "
                f"lowering the limit to {max_level}",
                details={"field": "max_level", "deepest_level": deepest},
            )
        org.max_level = max_level
    topup = changes.get("topup_max_level", org.topup_max_level)
    if not 0 <= topup <= max_level:
        raise InvalidInput(
            f"topup_max_level: must be 0 to max_level ({max_level})",
            details={"field": "topup_max_level"},
        )
    org.topup_max_level = topup
    if "members_see_org_feed" in changes:
        org.members_see_org_feed = bool(changes["members_see_org_feed"])
    if "credit_enforced" in changes:
        org.credit_enforced = bool(changes["credit_enforced"])
    await _settings_changed(
        session,
        actor,
        org,
        access.root[0],
        store,
        before=before,
        timezone=timezone,
        credit_enforced=credit_enforced,
    )
    return org


async def enforce_credit_from_first_top_up(
    session: AsyncSession, actor: Actor, org: Organization, root_group_id: str, store: GuardStore
) -> None:
    """An org whose owners never chose about prepaid credit becomes prepaid with its first
    top-up: putting money in the pool means spending it down, then stopping. Owners may switch
    it off again (and that choice stays)."""
    if org.credit_enforced is not None:
        return
    before = org_view(org)
    org.credit_enforced = True
    await _settings_changed(
        session,
        actor,
        org,
        root_group_id,
        store,
        before=before,
        timezone=org.timezone,
        credit_enforced=None,
    )


async def _settings_changed(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    root_group_id: str,
    store: GuardStore,
    *,
    before: dict[str, Any],
    timezone: str,
    credit_enforced: bool | None,
) -> None:
    """After org settings changed (from `timezone` and `credit_enforced`): drop the proxy's
    cached guard rules when they depend on what changed (budget periods, whether credit blocks),
    the credit counter when enforcement changed, and record the audit event."""
    await session.flush()
    if org.timezone != timezone:
        # The flush took the org's row lock: no usage batch sums a day in the old zone meanwhile.
        await rebuild_daily_rollups(session, org.id, org.timezone)
    if org.timezone != timezone or org.credit_enforced != credit_enforced:
        invalidate_after_commit(session, GUARD_TOPIC, org.id)
    if org.credit_enforced != credit_enforced:
        _forget_credit_counter(session, store, org.id)
    await record_action(
        session,
        actor,
        org_id=org.id,
        action="org.update",
        target_type="organization",
        target_id=org.id,
        group_id=root_group_id,
        before=before,
        after=org_view(org),
    )


async def delete_organization(
    session: AsyncSession, actor: Actor, org_id: str, now: datetime
) -> None:
    """Soft delete: the org answers 404 from now on and every one of its keys stops at once."""
    access = await load_access(session, actor, org_id)
    authorize(access, Action.ORG_DELETE)
    org = await organization_of(session, access)
    await record_action(
        session,
        actor,
        org_id=org.id,
        action="org.delete",
        target_type="organization",
        target_id=org.id,
        group_id=access.root[0],
        before=org_view(org),
    )
    org.deleted_at = now
    await session.flush()
    invalidate_after_commit(session, ORG_TOPIC, org.id)


# --- groups --------------------------------------------------------------------------------------


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
    await _name_is_free(session, org_id, parent.id, label)
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
        await _name_is_free(session, org_id, parent_id, label, except_id=group.id)
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
    children, members, keys = await repository.group_contents(session, group)
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
    disabled = await repository.disable_keys(session, org_id, group_id=group.id)
    for key_id in disabled:
        invalidate_after_commit(session, KEY_TOPIC, key_id)
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


# --- views and checks -----------------------------------------------------------------------------


def org_view(org: Organization) -> dict[str, Any]:
    return {
        "name": org.name,
        "timezone": org.timezone,
        "max_level": org.max_level,
        "topup_max_level": org.topup_max_level,
        "members_see_org_feed": org.members_see_org_feed,
        "credit_enforced": bool(org.credit_enforced),
    }


def _forget_credit_counter(session: AsyncSession, store: GuardStore, org_id: str) -> None:
    """Once committed, drop the org's credit counter (the key guard.rules uses) so it is rebuilt
    from the ledger when next needed: while credit was not enforced, requests without any other
    guardrail never touched it."""

    async def forget() -> None:
        await store.forget([credit_counter(org_id).key])

    after_commit(session, forget)


def group_view(group: Group) -> dict[str, Any]:
    return {"name": group.name, "parent_id": group.parent_id, "level": group.level}


def clean_name(name: str, field: str = "name") -> str:
    value = name.strip()
    if not value or len(value) > NAME_LIMIT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(
            f"{field}: must be 1 to {NAME_LIMIT} printable characters", details={"field": field}
        )
    return value


def _valid_timezone(name: str) -> str:
    try:
        zone(name)
    except ValueError as exc:
        raise InvalidInput(f"timezone: {exc}", details={"field": "timezone"}) from None
    return name


async def _name_is_free(
    session: AsyncSession, org_id: str, parent_id: str, name: str, *, except_id: str | None = None
) -> None:
    if await repository.sibling_named(session, org_id, parent_id, name, except_id=except_id):
        raise Conflict(
            f"name: a group named {name!r} already exists under {parent_id}",
            details={"field": "name"},
        )
