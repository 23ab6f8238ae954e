"""The SQL of the tenant tree: every query filters by org, so one tenant never sees another."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.orgs.models import Group, Membership, Organization, RoleBinding


async def organization(session: AsyncSession, org_id: str) -> Organization | None:
    org = await session.get(Organization, org_id)
    return None if org is None or org.deleted_at is not None else org


async def group_in_org(session: AsyncSession, org_id: str, group_id: str) -> Group | None:
    return await session.scalar(select(Group).where(Group.id == group_id, Group.org_id == org_id))


async def root_group(session: AsyncSession, org_id: str) -> Group:
    root = await session.scalar(
        select(Group).where(Group.org_id == org_id, Group.parent_id.is_(None))
    )
    if root is None:
        raise LookupError(f"organization {org_id} has no root group")
    return root


async def membership(session: AsyncSession, org_id: str, user_id: str) -> Membership | None:
    return await session.scalar(
        select(Membership).where(Membership.org_id == org_id, Membership.user_id == user_id)
    )


async def add(
    session: AsyncSession, *rows: Organization | Group | Membership | RoleBinding
) -> None:
    session.add_all(rows)
    await session.flush()
