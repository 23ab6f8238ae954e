"""The rules of identity: users, password login and sessions, personal admin tokens, freezing.

Identity events belong to no organization; they are recorded in the platform audit chain.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit import service as audit
from sluicegate.audit.models import PLATFORM_CHAIN
from sluicegate.core.actors import Actor, RequestMeta
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.digests import display_prefix, new_secret, secret_digest
from sluicegate.core.errors import (
    AccountFrozen,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import USER_TOPIC
from sluicegate.identity import passwords, repository
from sluicegate.identity.models import AdminToken, User

ADMIN_TOKEN_PREFIX = "sg-adm-"  # noqa: S105 - a public prefix, not a secret
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
MAX_EMAIL_LENGTH = 320
# Writing last_used_at on every admin call would turn every read into a write; once a minute
# is precise enough for "last used".
LAST_USED_RESOLUTION = timedelta(seconds=60)
# Personal tokens live at most this long; longer-lived automation should rotate them.
MAX_TOKEN_LIFETIME = timedelta(days=366)
BAD_LOGIN = "email or password is wrong"


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL.match(value):
        raise InvalidInput(f"email: {email!r} is not an email address", details={"field": "email"})
    return value


# --- users ------------------------------------------------------------------------------------


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


def actor_for(user: User, meta: RequestMeta | None = None) -> Actor:
    """Act as `user` without a token: for the CLI, fixtures and benchmarks, which reach the
    services in-process. Authorization still applies to everything the actor does."""
    return Actor(
        user_id=user.id,
        email=user.email,
        is_platform_admin=user.is_platform_admin,
        meta=meta or RequestMeta(),
    )


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await repository.user_by_email(session, normalize_email(email))


async def register_user(session: AsyncSession, *, email: str, name: str, password: str) -> User:
    """A new person with a password (an accepted invitation)."""
    passwords.check_password_rules(password)
    user = User(
        id=new_id("usr"),
        email=normalize_email(email),
        name=name,
        password_hash=await passwords.hash_password(password),
    )
    await repository.add(session, user)
    return user


async def password_matches(user: User, password: str) -> bool:
    return await passwords.verify_password(user.password_hash, password)


# --- tokens and sessions ----------------------------------------------------------------------


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


async def authenticate(
    session: AsyncSession, *, pepper: bytes, secret: str, now: datetime, meta: RequestMeta
) -> Actor:
    """The actor behind an admin bearer token; Unauthenticated for anything that is not a live
    token of an active user. Checked on every call, so revocation and freezing act at once."""
    found = await repository.token_with_user(session, secret_digest(pepper, secret))
    if found is None:
        raise Unauthenticated("the admin token is not valid; log in again or create a new token")
    token, user = found
    if token.revoked_at is not None:
        raise Unauthenticated("this admin token was revoked; log in again")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthenticated("this admin token has expired; log in again")
    if user.status != "active":
        raise AccountFrozen("this account is frozen; a platform admin can unfreeze it")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        await session.flush()
    return Actor(
        user_id=user.id,
        email=user.email,
        is_platform_admin=user.is_platform_admin,
        token_id=token.id,
        token_kind=token.kind,
        meta=meta,
    )


async def login(
    session: AsyncSession,
    *,
    pepper: bytes,
    email: str,
    password: str,
    ttl: timedelta,
    now: datetime,
    meta: RequestMeta,
) -> tuple[User, AdminToken, str]:
    """A new session for the right email and password. Wrong email and wrong password answer
    alike and take as long, so the answer does not reveal who has an account."""
    try:
        address = normalize_email(email)
    except InvalidInput:
        address = ""
    user = await repository.user_by_email(session, address) if address else None
    matches = await passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not matches:
        raise Unauthenticated(BAD_LOGIN)
    if user.status != "active":
        raise AccountFrozen("this account is frozen; a platform admin can unfreeze it")
    assert user.password_hash is not None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = await passwords.hash_password(password)
    token, secret = await issue_admin_token(
        session, user, pepper=pepper, kind="session", name="login", expires_at=now + ttl
    )
    await _record(session, user.id, "auth.login", "session", token.id, meta, now=now)
    return user, token, secret


async def logout(session: AsyncSession, actor: Actor, now: datetime) -> None:
    """Revoke the token this call was made with."""
    if actor.token_id is None:
        return
    token = await repository.token_of_user(session, actor.user_id, actor.token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
        await session.flush()
        await _record(session, actor.user_id, "auth.logout", token.kind, token.id, actor.meta)


async def revoke_sessions(session: AsyncSession, actor: Actor, now: datetime) -> int:
    """Log out everywhere: every session of the caller, this one included. Personal tokens are
    left alone (they are revoked one by one)."""
    count = await repository.revoke_tokens(
        session, actor.user_id, now, kind="session", except_id=None
    )
    await _record(
        session,
        actor.user_id,
        "auth.sessions_revoked",
        "user",
        actor.user_id,
        actor.meta,
        after={"revoked": count},
    )
    return count


async def list_tokens(
    session: AsyncSession, actor: Actor, *, kind: str, now: datetime, cursor: str | None, limit: int
) -> tuple[list[AdminToken], str | None]:
    return await repository.live_tokens(
        session, actor.user_id, kind, now, cursor=cursor, limit=limit
    )


async def create_personal_token(
    session: AsyncSession,
    actor: Actor,
    *,
    pepper: bytes,
    name: str,
    expires_at: datetime | None,
    now: datetime,
) -> tuple[AdminToken, str]:
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at: must be in the future", details={"field": "expires_at"})
    if expires_at is not None and expires_at - now > MAX_TOKEN_LIFETIME:
        raise InvalidInput(
            f"expires_at: at most {MAX_TOKEN_LIFETIME.days} days ahead",
            details={"field": "expires_at"},
        )
    user = await _user(session, actor.user_id)
    token, secret = await issue_admin_token(
        session, user, pepper=pepper, kind="personal", name=name, expires_at=expires_at
    )
    await _record(
        session,
        actor.user_id,
        "token.create",
        "admin_token",
        token.id,
        actor.meta,
        after=_token_view(token),
    )
    return token, secret


async def revoke_token(session: AsyncSession, actor: Actor, token_id: str, now: datetime) -> None:
    token = await repository.token_of_user(session, actor.user_id, token_id)
    if token is None or token.revoked_at is not None:
        raise NotFound(f"token {token_id} not found")
    token.revoked_at = now
    await session.flush()
    await _record(
        session,
        actor.user_id,
        "token.revoke",
        "admin_token",
        token.id,
        actor.meta,
        before=_token_view(token),
    )


async def update_profile(
    session: AsyncSession,
    actor: Actor,
    *,
    name: str | None,
    password: str | None,
    current_password: str | None,
    now: datetime,
) -> User:
    """Change the caller's name or password. A new password needs the current one (when there is
    one) and logs out every other session."""
    user = await _user(session, actor.user_id)
    before = {"name": user.name}
    if name is not None:
        user.name = name
    if password is not None:
        passwords.check_password_rules(password)
        if user.password_hash is not None and not await passwords.verify_password(
            user.password_hash, current_password or ""
        ):
            raise PermissionDenied(
                "current_password: does not match; changing the password needs the current one",
                details={"field": "current_password"},
            )
        user.password_hash = await passwords.hash_password(password)
        await repository.revoke_tokens(
            session, user.id, now, kind="session", except_id=actor.token_id
        )
    await session.flush()
    after = {"name": user.name, "password_changed": password is not None}
    await _record(
        session, user.id, "user.update", "user", user.id, actor.meta, before=before, after=after
    )
    return user


# --- platform administration -----------------------------------------------------------------


async def get_self(session: AsyncSession, actor: Actor) -> User:
    return await _user(session, actor.user_id)


def require_platform_admin(actor: Actor) -> None:
    if not actor.is_platform_admin:
        raise PermissionDenied("this needs a platform admin (see `sluicegate bootstrap`)")


async def get_user(session: AsyncSession, actor: Actor, user_id: str) -> User:
    require_platform_admin(actor)
    return await _user(session, user_id)


async def list_users(
    session: AsyncSession,
    actor: Actor,
    *,
    email: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[User], str | None]:
    require_platform_admin(actor)
    return await repository.list_users(
        session, email=email, status=status, cursor=cursor, limit=limit
    )


async def set_user_status(session: AsyncSession, actor: Actor, user_id: str, status: str) -> User:
    """Freeze or unfreeze a person. A frozen user's sessions and tokens are refused on their next
    call, and every worker drops the cached contexts of their API keys after commit."""
    require_platform_admin(actor)
    user = await _user(session, user_id)
    if user.id == actor.user_id and status == "frozen":
        raise Conflict("you cannot freeze your own account")
    if user.status == status:
        return user
    before = {"status": user.status}
    user.status = status
    await session.flush()
    invalidate_after_commit(session, USER_TOPIC, user.id)
    action = "user.freeze" if status == "frozen" else "user.unfreeze"
    await _record(
        session,
        actor.user_id,
        action,
        "user",
        user.id,
        actor.meta,
        before=before,
        after={"status": status},
    )
    return user


# --- helpers ----------------------------------------------------------------------------------


async def _user(session: AsyncSession, user_id: str) -> User:
    user = await repository.user(session, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def _token_view(token: AdminToken) -> dict[str, object]:
    return {
        "kind": token.kind,
        "name": token.name,
        "prefix": token.prefix,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


async def _record(
    session: AsyncSession,
    actor_user_id: str,
    action: str,
    target_type: str,
    target_id: str,
    meta: RequestMeta,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    await audit.record(
        session,
        org_id=PLATFORM_CHAIN,
        actor_user_id=actor_user_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        before=before,
        after=after,
        meta=meta,
        now=now,
    )
