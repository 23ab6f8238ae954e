"""The SQL of API keys, including the one query the proxy runs on an auth cache miss."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Row, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.ids import has_prefix
from sluicegate.core.pagination import paginate
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.orgs.models import Group, Membership, Organization, in_subtrees


async def key_in_org(session: AsyncSession, org_id: str, key_id: str) -> ApiKey | None:
    if not has_prefix(key_id, "key"):
        return None
    return await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id))


async def list_keys(
    session: AsyncSession,
    org_id: str,
    *,
    subtrees: list[str] | None,
    also_owner: str | None,
    group_subtree: str | None,
    owner_user_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[ApiKey], str | None]:
    """Keys of the org in the given subtrees (all when None) plus those `also_owner` owns."""
    statement = (
        select(ApiKey).join(Group, Group.id == ApiKey.group_id).where(ApiKey.org_id == org_id)
    )
    if subtrees is not None:
        visible = in_subtrees(Group.path, subtrees)
        if also_owner is not None:
            visible = or_(visible, ApiKey.owner_user_id == also_owner)
        statement = statement.where(visible)
    if group_subtree is not None:
        statement = statement.where(in_subtrees(Group.path, [group_subtree]))
    if owner_user_id is not None:
        statement = statement.where(ApiKey.owner_user_id == owner_user_id)
    if status is None:
        statement = statement.where(ApiKey.status != "revoked")
    else:
        statement = statement.where(ApiKey.status == status)
    return await paginate(session, statement, ApiKey.id, cursor=cursor, limit=limit)


async def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


_AUTH_COLUMNS = select(
    ApiKey.id,
    ApiKey.digest,
    ApiKey.previous_expires_at,
    ApiKey.status,
    ApiKey.expires_at,
    ApiKey.allowed_models,
    ApiKey.org_id,
    ApiKey.group_id,
    ApiKey.owner_user_id,
    Group.path,
    User.status.label("owner_status"),
    Membership.status.label("membership_status"),
    Organization.deleted_at.label("org_deleted_at"),
)

AUTH_QUERY = (
    _AUTH_COLUMNS.join(Group, Group.id == ApiKey.group_id)
    .join(User, User.id == ApiKey.owner_user_id)
    .join(Organization, Organization.id == ApiKey.org_id)
    .outerjoin(
        Membership,
        (Membership.org_id == ApiKey.org_id) & (Membership.user_id == ApiKey.owner_user_id),
    )
)


async def auth_row(session: AsyncSession, digest: str) -> Row[tuple[object, ...]] | None:
    """The key whose current secret, or whose previous secret during a rotation's grace period,
    has this digest. Both columns are uniquely indexed, so this is two index probes."""
    result = await session.execute(
        AUTH_QUERY.where(or_(ApiKey.digest == digest, ApiKey.previous_digest == digest))
    )
    return result.first()  # type: ignore[return-value]


async def count_in_group(session: AsyncSession, group_id: str) -> int:
    """Keys in the group that are not revoked."""
    count = await session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.group_id == group_id, ApiKey.status != "revoked")
    )
    return int(count or 0)


async def count_per_owner(
    session: AsyncSession, org_id: str, user_ids: Sequence[str]
) -> dict[str, int]:
    """Keys that are not revoked, per owner."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(ApiKey.owner_user_id, func.count())
        .where(
            ApiKey.org_id == org_id,
            ApiKey.owner_user_id.in_(set(user_ids)),
            ApiKey.status != "revoked",
        )
        .group_by(ApiKey.owner_user_id)
    )
    return {owner: int(count) for owner, count in rows}


async def disable_active(
    session: AsyncSession,
    org_id: str,
    *,
    owner_user_id: str | None = None,
    group_id: str | None = None,
) -> list[str]:
    """Disable the active keys of an owner or in a group; returns their ids."""
    condition = [ApiKey.org_id == org_id, ApiKey.status == "active"]
    if owner_user_id is not None:
        condition.append(ApiKey.owner_user_id == owner_user_id)
    if group_id is not None:
        condition.append(ApiKey.group_id == group_id)
    ids = list(await session.scalars(select(ApiKey.id).where(*condition)))
    if ids:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id.in_(ids))
            .values(status="disabled")
            .execution_options(synchronize_session=False)
        )
    return ids
