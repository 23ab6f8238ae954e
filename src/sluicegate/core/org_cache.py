"""A snapshot per organization, cached per process for the hot path: loaded from the database on
first use, dropped when the invalidation bus names the org (or `ALL_TOPICS`), refreshed after a
TTL as a backstop. While the database cannot be reached, a snapshot loaded recently keeps being
used and the database is asked again at most every few seconds; a change published meanwhile
still drops it. Concurrent callers share one load, and a load that was under way when its org
was invalidated answers the callers that started it but is not kept (it may predate the
change). The guard's rules (guard/rules.py) and the groups' routing overrides
(routing/cache.py) are kept this way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.db import reaching_database
from sluicegate.core.errors import DatabaseUnavailable
from sluicegate.core.invalidation import ALL_TOPICS

T = TypeVar("T")
Loader = Callable[[AsyncSession, str], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    # Backstop only: changes arrive over the bus within milliseconds.
    ttl_seconds: float = 30.0
    # As for keys (keys/lookup.py): what was loaded this recently serves through a database
    # outage, and the database is asked again at most this often meanwhile.
    stale_if_error_seconds: float = 600.0
    retry_after_error_seconds: float = 2.0


@dataclass(slots=True)
class _Entry(Generic[T]):
    value: T
    fresh_until: float  # monotonic seconds
    loaded_at: float


class OrgCache(Generic[T]):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        load: Loader[T],
        topics: Collection[str],
        policy: CachePolicy = CachePolicy(),
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._load = load
        self._topics = frozenset(topics)
        self._policy = policy
        self._entries: dict[str, _Entry[T]] = {}
        self._loading: dict[str, asyncio.Future[T]] = {}
        # Bumped by every invalidation of the org (`_epoch` by every one of all orgs): a load
        # that began before it must not store what it read.
        self._generations: dict[str, int] = {}
        self._epoch = 0

    async def get(self, org_id: str) -> T:
        entry = self._entries.get(org_id)
        now = self._clock.monotonic()
        if entry is not None and entry.fresh_until > now:
            return entry.value
        pending = self._loading.get(org_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._loading[org_id] = future
        try:
            value = await self._fetch(org_id, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            if self._loading.get(org_id) is future:
                del self._loading[org_id]
        future.set_result(value)
        return value

    async def _fetch(self, org_id: str, now: float) -> T:
        seen = self._version(org_id)
        policy = self._policy
        try:
            async with reaching_database(), self._sessions() as session:
                value = await self._load(session, org_id)
        except DatabaseUnavailable:
            entry = self._entries.get(org_id)
            if entry is None or now - entry.loaded_at > policy.stale_if_error_seconds:
                raise
            entry.fresh_until = now + policy.retry_after_error_seconds
            return entry.value
        if self._version(org_id) == seen:
            self._entries[org_id] = _Entry(value, now + policy.ttl_seconds, now)
        return value

    def _version(self, org_id: str) -> tuple[int, int]:
        return self._epoch, self._generations.get(org_id, 0)

    async def invalidate(self, topic: str, payload: str) -> None:
        """The bus handler: one of this cache's topics with an org id drops that org's snapshot,
        `ALL_TOPICS` (a subscriber that reconnected) drops every one."""
        if topic == ALL_TOPICS:
            self._entries.clear()
            self._loading.clear()
            self._generations.clear()
            self._epoch += 1
        elif topic in self._topics:
            self._entries.pop(payload, None)
            # Later callers start a load of their own instead of joining one that may have read
            # the database before the change.
            self._loading.pop(payload, None)
            self._generations[payload] = self._generations.get(payload, 0) + 1
