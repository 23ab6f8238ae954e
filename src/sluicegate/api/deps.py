"""FastAPI dependencies of the admin API: the request's unit of work, the clock, the settings,
the providers file the app serves, the request's metadata and the list parameters every
collection takes. The authenticated actor is identity's (identity/dependencies.py), the counter
store the guard's (guard/dependencies.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.actors import RequestMeta
from sluicegate.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from sluicegate.providers.config import ProviderSettings
from sluicegate.resources import Resources
from sluicegate.settings import Settings

USER_AGENT_LIMIT = 400


def runtime_of(request: Request) -> Resources:
    runtime: Resources = request.app.state.runtime
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


def provider_settings(request: Request) -> ProviderSettings:
    """The providers and models of the providers file, as the app's lifespan loaded them (once,
    at start-up, for the proxy and the admin API alike)."""
    loaded: ProviderSettings = request.app.state.providers
    return loaded


Now = Annotated[datetime, Depends(now)]
CurrentSettings = Annotated[Settings, Depends(settings)]
Providers = Annotated[ProviderSettings, Depends(provider_settings)]


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


Cursor = Annotated[
    str | None,
    Query(max_length=200, description="next_cursor of the previous page; absent for the first"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")]
DEFAULT_PAGE = DEFAULT_LIMIT
