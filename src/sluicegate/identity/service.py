"""The rules of identity: who a user is and which admin tokens they hold."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.digests import display_prefix, new_secret, secret_digest
from sluicegate.core.errors import InvalidInput
from sluicegate.core.ids import new_id
from sluicegate.identity import repository
from sluicegate.identity.models import AdminToken, User

ADMIN_TOKEN_PREFIX = "sg-adm-"  # noqa: S105 - a public prefix, not a secret
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 320:
        raise InvalidInput(f"{email!r} is not an email address", details={"field": "email"})
    return value


async def ensure_user(
    session: AsyncSession, email: str, *, platform_admin: bool = False
) -> tuple[User, bool]:
    """The user with this email, created if missing; the flag says whether it was created."""
    address = normalize_email(email)
    user = await repository.user_by_email(session, address)
    if user is not None:
        if platform_admin and not user.is_platform_admin:
            user.is_platform_admin = True
            await session.flush()
        return user, False
    user = User(id=new_id("usr"), email=address, name="", is_platform_admin=platform_admin)
    await repository.add(session, user)
    return user, True


async def issue_admin_token(
    session: AsyncSession,
    user: User,
    *,
    pepper: bytes,
    kind: str = "personal",
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[AdminToken, str]:
    """Store a new token's digest and return the row with the secret, which is shown once."""
    secret = new_secret(ADMIN_TOKEN_PREFIX)
    token = AdminToken(
        id=new_id("tok"),
        user_id=user.id,
        kind=kind,
        name=name,
        prefix=display_prefix(secret),
        digest=secret_digest(pepper, secret),
        expires_at=expires_at,
    )
    await repository.add(session, token)
    return token, secret
