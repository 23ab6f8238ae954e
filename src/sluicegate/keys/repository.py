"""The SQL of API keys, including the one query the proxy runs on an auth cache miss."""

from __future__ import annotations

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.orgs.models import Group, Membership, Organization


async def key_in_org(session: AsyncSession, org_id: str, key_id: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org_id))


async def add(session: AsyncSession, key: ApiKey) -> None:
    session.add(key)
    await session.flush()


_AUTH_COLUMNS = select(
    ApiKey.id,
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
    result = await session.execute(AUTH_QUERY.where(ApiKey.digest == digest))
    return result.first()  # type: ignore[return-value]
