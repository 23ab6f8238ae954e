"""The rules of the tenant tree: creating organizations, groups and memberships.

Services flush, never commit; the caller's unit of work commits.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.ids import new_id
from sluicegate.core.timezones import zone
from sluicegate.identity.models import User
from sluicegate.orgs import repository
from sluicegate.orgs.models import ROLES, Group, Membership, Organization, RoleBinding

PATH_SEPARATOR = "/"


async def create_organization(
    session: AsyncSession, *, owner: User, name: str, timezone: str = "UTC"
) -> Organization:
    """A new org with its root group; `owner` becomes a member homed at the root and its owner."""
    try:
        zone(timezone)
    except ValueError as exc:
        raise InvalidInput(str(exc), details={"field": "timezone"}) from None
    org = Organization(id=new_id("org"), name=_name(name), timezone=timezone)
    root_id = new_id("grp")
    root = Group(id=root_id, org_id=org.id, parent_id=None, name=org.name, level=0, path=root_id)
    await repository.add(session, org)
    await repository.add(session, root)
    await add_member(session, org_id=org.id, user=owner, home_group=root, role="owner")
    return org


async def create_group(
    session: AsyncSession, *, org_id: str, name: str, parent_id: str | None = None
) -> Group:
    """A group under `parent_id` (the root when None), no deeper than the org allows."""
    org = await repository.organization(session, org_id)
    if org is None:
        raise NotFound(f"organization {org_id} not found")
    if parent_id is None:
        parent = await repository.root_group(session, org_id)
    else:
        found = await repository.group_in_org(session, org_id, parent_id)
        if found is None:
            raise NotFound(f"group {parent_id} not found", details={"field": "parent_id"})
        parent = found
    level = parent.level + 1
    if level > org.max_level:
        raise InvalidInput(
            f"a group under {parent.id} would be at level {level}, deeper than this "
            f"organization allows (maximum level {org.max_level})",
            details={"field": "parent_id", "max_level": org.max_level},
        )
    group_id = new_id("grp")
    group = Group(
        id=group_id,
        org_id=org_id,
        parent_id=parent.id,
        name=_name(name),
        level=level,
        path=f"{parent.path}{PATH_SEPARATOR}{group_id}",
    )
    await repository.add(session, group)
    return group


async def add_member(
    session: AsyncSession, *, org_id: str, user: User, home_group: Group, role: str = "member"
) -> Membership:
    """Make `user` a member homed at `home_group`, with `role` bound at that group."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", details={"field": "role"})
    if home_group.org_id != org_id:
        raise NotFound(f"group {home_group.id} not found", details={"field": "group_id"})
    if await repository.membership(session, org_id, user.id) is not None:
        raise Conflict(f"{user.email} is already a member of this organization")
    member = Membership(
        id=new_id("mem"), org_id=org_id, user_id=user.id, home_group_id=home_group.id
    )
    binding = RoleBinding(
        id=new_id("rb"), org_id=org_id, group_id=home_group.id, user_id=user.id, role=role
    )
    await repository.add(session, member, binding)
    return member


def chain_of(group: Group) -> tuple[str, ...]:
    """Group ids from the org root down to `group` itself."""
    return tuple(group.path.split(PATH_SEPARATOR))


def _name(name: str) -> str:
    value = name.strip()
    if not value or len(value) > 200:
        raise InvalidInput("name must be 1 to 200 characters", details={"field": "name"})
    return value
