"""FastAPI dependencies of the admin API: the request's unit of work, the authenticated actor,
the clock, and the list parameters every collection takes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.actors import Actor, RequestMeta
from sluicegate.core.errors import Unauthenticated
from sluicegate.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from sluicegate.guard.counters import GuardStore
from sluicegate.identity import service as identity
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings

USER_AGENT_LIMIT = 400

bearer = HTTPBearer(
    auto_error=False,
    description="An admin token: a session from POST /api/v1/auth/login, a personal token "
    "from POST /api/v1/auth/tokens, or the one `sluicegate bootstrap` printed.",
)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def _unit_of_work(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the route returns, before the response is
    sent (so a client never reads a stale answer to its own write), rolled back on any error.
    Cache invalidations queued by services are published after the commit."""
    async with runtime_of(request).unit_of_work() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(_unit_of_work, scope="function")]


def now(request: Request) -> datetime:
    return runtime_of(request).clock.now()


def settings(request: Request) -> Settings:
    return runtime_of(request).settings


def counters(request: Request) -> GuardStore:
    return runtime_of(request).counters


Now = Annotated[datetime, Depends(now)]
CurrentSettings = Annotated[Settings, Depends(settings)]
# The guard's counter store: budgets' spent and reserved, the credit balance.
Counters = Annotated[GuardStore, Depends(counters)]


def request_meta(request: Request) -> RequestMeta:
    client = request.client
    state = request.scope.get("state") or {}
    agent = request.headers.get("user-agent")
    return RequestMeta(
        ip=client.host if client else None,
        user_agent=agent[:USER_AGENT_LIMIT] if agent else None,
        request_id=state.get("request_id"),
    )


Meta = Annotated[RequestMeta, Depends(request_meta)]


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

Cursor = Annotated[
    str | None,
    Query(max_length=200, description="next_cursor of the previous page; absent for the first"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
DEFAULT_PAGE = DEFAULT_LIMIT
