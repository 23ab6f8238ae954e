"""The SQL of routing overrides: one group's, an org's snapshot for the proxy, and the page of
an org's overrides a caller reads."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.pagination import paginate
from sluicegate.orgs.models import Group, in_subtrees
from sluicegate.routing.models import RoutingOverrideRow


async def override_of_group(
    session: AsyncSession, org_id: str, group_id: str, *, for_update: bool = False
) -> RoutingOverrideRow | None:
    statement = select(RoutingOverrideRow).where(
        RoutingOverrideRow.org_id == org_id, RoutingOverrideRow.group_id == group_id
    )
    if for_update:
        statement = statement.with_for_update()
    return await session.scalar(statement)


async def overrides_of_org(session: AsyncSession, org_id: str) -> list[RoutingOverrideRow]:
    """Every override of the org, live groups or not (a deleted group's keys are disabled, so
    no chain the proxy serves reaches it)."""
    return list(
        await session.scalars(select(RoutingOverrideRow).where(RoutingOverrideRow.org_id == org_id))
    )


async def list_overrides(
    session: AsyncSession,
    org_id: str,
    *,
    readable: list[str] | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[RoutingOverrideRow], str | None]:
    """The overrides of the org's live groups; with `readable` (subtree paths), only those of
    groups inside one of them. None: all of them."""
    statement = (
        select(RoutingOverrideRow)
        .join(Group, Group.id == RoutingOverrideRow.group_id)
        .where(RoutingOverrideRow.org_id == org_id, Group.deleted_at.is_(None))
    )
    if readable is not None:
        statement = statement.where(in_subtrees(Group.path, readable))
    return await paginate(session, statement, RoutingOverrideRow.id, cursor=cursor, limit=limit)


async def add(session: AsyncSession, row: RoutingOverrideRow) -> None:
    session.add(row)
    await session.flush()


async def delete_row(session: AsyncSession, row: RoutingOverrideRow) -> None:
    await session.delete(row)
    await session.flush()
