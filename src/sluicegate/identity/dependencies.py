"""The admin API's authenticated actor: the bearer token of a request resolved to a person, as
FastAPI dependencies every admin route takes (`CurrentActor`, or `OptionalActor` where
anonymous callers are welcome)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sluicegate.api.deps import DbSession, request_meta, runtime_of
from sluicegate.core.actors import Actor
from sluicegate.core.errors import Unauthenticated
from sluicegate.identity import service as identity

bearer = HTTPBearer(
    auto_error=False,
    description="An admin token: a session from POST /api/v1/auth/login, a personal token "
    "from POST /api/v1/auth/tokens, or the one `sluicegate bootstrap` printed.",
)


async def _optional_actor(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor | None:
    if credentials is None:
        return None
    runtime = runtime_of(request)
    return await identity.authenticate(
        session,
        pepper=runtime.settings.secret,
        secret=credentials.credentials,
        now=runtime.clock.now(),
        meta=request_meta(request),
    )


async def _current_actor(actor: Annotated[Actor | None, Depends(_optional_actor)]) -> Actor:
    if actor is None:
        raise Unauthenticated(
            "no admin token; send it as 'Authorization: Bearer <token>' (log in with "
            "POST /api/v1/auth/login)"
        )
    return actor


CurrentActor = Annotated[Actor, Depends(_current_actor)]
OptionalActor = Annotated[Actor | None, Depends(_optional_actor)]
