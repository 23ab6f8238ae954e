"""The SQL of identity: users and admin tokens (sessions and personal tokens)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.ids import has_prefix
from sluicegate.core.pagination import paginate
from sluicegate.identity.models import AdminToken, User


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def user(session: AsyncSession, user_id: str) -> User | None:
    if not has_prefix(user_id, "usr"):
        return None
    return await session.get(User, user_id)


async def add(session: AsyncSession, row: User | AdminToken) -> None:
    session.add(row)
    await session.flush()


async def token_with_user(session: AsyncSession, digest: str) -> tuple[AdminToken, User] | None:
    result = await session.execute(
        select(AdminToken, User)
        .join(User, User.id == AdminToken.user_id)
        .where(AdminToken.digest == digest)
    )
    row = result.first()
    return (row[0], row[1]) if row is not None else None


async def token_of_user(session: AsyncSession, user_id: str, token_id: str) -> AdminToken | None:
    if not has_prefix(token_id, "tok"):
        return None
    return await session.scalar(
        select(AdminToken).where(AdminToken.id == token_id, AdminToken.user_id == user_id)
    )


async def live_tokens(
    session: AsyncSession,
    user_id: str,
    kind: str,
    now: datetime,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[AdminToken], str | None]:
    statement = select(AdminToken).where(
        AdminToken.user_id == user_id,
        AdminToken.kind == kind,
        AdminToken.revoked_at.is_(None),
        (AdminToken.expires_at.is_(None)) | (AdminToken.expires_at > now),
    )
    return await paginate(session, statement, AdminToken.id, cursor=cursor, limit=limit)


async def revoke_tokens(
    session: AsyncSession, user_id: str, now: datetime, *, kind: str, except_id: str | None
) -> int:
    statement = (
        update(AdminToken)
        .where(
            AdminToken.user_id == user_id,
            AdminToken.kind == kind,
            AdminToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    if except_id is not None:
        statement = statement.where(AdminToken.id != except_id)
    result = await session.execute(statement.execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def list_users(
    session: AsyncSession, *, email: str | None, status: str | None, cursor: str | None, limit: int
) -> tuple[list[User], str | None]:
    statement = select(User)
    if email:
        statement = statement.where(func.lower(User.email).contains(email.lower(), autoescape=True))
    if status:
        statement = statement.where(User.status == status)
    return await paginate(session, statement, User.id, cursor=cursor, limit=limit)
