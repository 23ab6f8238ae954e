"""HTTP routes of identity: /api/v1/auth (login, sessions, personal tokens, me) and
/api/v1/users (platform admins: find, freeze, unfreeze)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from sluicegate.api.deps import DEFAULT_PAGE, CurrentSettings, Cursor, DbSession, Limit, Meta, Now
from sluicegate.api.errors import CONFLICT, INVALID, NOT_FOUND, STANDARD_ERRORS, UNAUTHENTICATED
from sluicegate.api.fields import SearchText
from sluicegate.api.pages import Page
from sluicegate.identity import service
from sluicegate.identity.dependencies import CurrentActor
from sluicegate.identity.schemas import (
    LoginIn,
    LoginOut,
    MeUpdate,
    RevokedOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserOut,
)

router = APIRouter(tags=["identity"], responses=STANDARD_ERRORS)


@router.post("/auth/login", responses={**UNAUTHENTICATED, **INVALID})
async def login(
    body: LoginIn, session: DbSession, settings: CurrentSettings, now: Now, meta: Meta
) -> LoginOut:
    """Start a session with an email and password; the token expires after
    SLUICEGATE_SESSION_TTL_HOURS."""
    user, token, secret = await service.login(
        session,
        pepper=settings.secret,
        email=body.email,
        password=body.password,
        ttl=timedelta(hours=settings.session_ttl_hours),
        now=now,
        meta=meta,
    )
    return LoginOut(user_id=user.id, token=secret, expires_at=token.expires_at)


@router.post("/auth/logout", status_code=204)
async def logout(session: DbSession, actor: CurrentActor, now: Now) -> Response:
    """Revoke the token this call is made with."""
    await service.logout(session, actor, now)
    return Response(status_code=204)


@router.post("/auth/sessions/revoke-all")
async def revoke_all_sessions(session: DbSession, actor: CurrentActor, now: Now) -> RevokedOut:
    """Log out everywhere: every session of yours ends, this one included. Personal tokens stay."""
    return RevokedOut(revoked=await service.revoke_sessions(session, actor, now))


@router.patch("/auth/me")
async def update_me(body: MeUpdate, session: DbSession, actor: CurrentActor, now: Now) -> UserOut:
    """Change your name or password. A new password logs out your other sessions."""
    user = await service.update_profile(
        session,
        actor,
        name=body.name,
        password=body.password,
        current_password=body.current_password,
        now=now,
    )
    return UserOut.model_validate(user)


@router.post("/auth/tokens", status_code=201)
async def create_token(
    body: TokenIn, session: DbSession, actor: CurrentActor, settings: CurrentSettings, now: Now
) -> TokenCreated:
    """A personal admin token for scripts; its secret is shown only in this response."""
    token, secret = await service.create_personal_token(
        session, actor, pepper=settings.secret, name=body.name, expires_at=body.expires_at, now=now
    )
    return TokenCreated(**TokenOut.of(token, actor.token_id).model_dump(), token=secret)


@router.get("/auth/tokens")
async def list_tokens(
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    kind: Literal["personal", "session"] = "personal",
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[TokenOut]:
    """Your live personal tokens, or with kind=session your live sessions (never a secret)."""
    rows, next_cursor = await service.list_tokens(
        session, actor, kind=kind, now=now, cursor=cursor, limit=limit
    )
    return Page(items=[TokenOut.of(t, actor.token_id) for t in rows], next_cursor=next_cursor)


@router.delete("/auth/tokens/{token_id}", status_code=204, responses=NOT_FOUND)
async def revoke_token(
    token_id: str, session: DbSession, actor: CurrentActor, now: Now
) -> Response:
    """Revoke one of your personal tokens, or end one of your sessions."""
    await service.revoke_token(session, actor, token_id, now)
    return Response(status_code=204)


@router.get("/users")
async def list_users(
    session: DbSession,
    actor: CurrentActor,
    email: Annotated[SearchText | None, Query(description="part of the email")] = None,
    status: Literal["active", "frozen"] | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[UserOut]:
    """Platform admins: find users."""
    rows, next_cursor = await service.list_users(
        session, actor, email=email, status=status, cursor=cursor, limit=limit
    )
    return Page(items=[UserOut.model_validate(u) for u in rows], next_cursor=next_cursor)


@router.get("/users/{user_id}", responses=NOT_FOUND)
async def get_user(user_id: str, session: DbSession, actor: CurrentActor) -> UserOut:
    """Platform admins: one user."""
    return UserOut.model_validate(await service.get_user(session, actor, user_id))


@router.post("/users/{user_id}/freeze", responses={**NOT_FOUND, **CONFLICT})
async def freeze_user(user_id: str, session: DbSession, actor: CurrentActor) -> UserOut:
    """Platform admins: freeze a user. Their sessions, personal tokens and API keys stop
    working at once, everywhere; nothing is deleted."""
    return UserOut.model_validate(await service.set_user_status(session, actor, user_id, "frozen"))


@router.post("/users/{user_id}/unfreeze", responses=NOT_FOUND)
async def unfreeze_user(user_id: str, session: DbSession, actor: CurrentActor) -> UserOut:
    """Platform admins: lift a freeze."""
    return UserOut.model_validate(await service.set_user_status(session, actor, user_id, "active"))
