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
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.events import announce
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import GUARD_TOPIC, ORG_TOPIC
from sluicegate.core.timezones import zone
from sluicegate.orgs import repository
from sluicegate.orgs.authorize import (
    Action,
    Binding,
    OrgAccess,
    Path,
    authorize,
)
from sluicegate.orgs.events import CreditEnforcementChanged, OrgTimezoneChanged
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
) -> Organization:
    """Change settings: name, timezone, max_level, topup_max_level, members_see_org_feed,
    credit_enforced."""
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
        before=before,
        timezone=timezone,
        credit_enforced=credit_enforced,
    )
    return org


async def enforce_credit_from_first_top_up(
    session: AsyncSession, actor: Actor, org: Organization, root_group_id: str
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
        before=before,
        timezone=org.timezone,
        credit_enforced=None,
    )


async def _settings_changed(
    session: AsyncSession,
    actor: Actor,
    org: Organization,
    root_group_id: str,
    *,
    before: dict[str, Any],
    timezone: str,
    credit_enforced: bool | None,
) -> None:
    """After org settings changed (from `timezone` and `credit_enforced`): drop the proxy's
    cached guard rules when they depend on what changed (budget periods, whether credit blocks),
    announce the changes others keep state for, and record the audit event."""
    await session.flush()
    if org.timezone != timezone:
        # The flush took the org's row lock: no usage batch sums a day in the old zone meanwhile.
        await announce(session, OrgTimezoneChanged(org.id, org.timezone))
    if org.timezone != timezone or org.credit_enforced != credit_enforced:
        invalidate_after_commit(session, GUARD_TOPIC, org.id)
    if org.credit_enforced != credit_enforced:
        await announce(session, CreditEnforcementChanged(org.id, bool(org.credit_enforced)))
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


async def name_is_free(
    session: AsyncSession, org_id: str, parent_id: str, name: str, *, except_id: str | None = None
) -> None:
    if await repository.sibling_named(session, org_id, parent_id, name, except_id=except_id):
        raise Conflict(
            f"name: a group named {name!r} already exists under {parent_id}",
            details={"field": "name"},
        )
