"""The SQL of identity: users and admin tokens."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.identity.models import AdminToken, User


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def add(session: AsyncSession, row: User | AdminToken) -> None:
    session.add(row)
    await session.flush()
