"""The process's long-lived resources, built once from Settings: database, Redis, counters, bus.

The app's lifespan and the CLI commands open one Runtime and close it on the way out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from sluicegate.audit.chain import SESSION_KEY, audit_key
from sluicegate.core.clock import Clock, SystemClock
from sluicegate.core.db import (
    Timeouts,
    make_engine,
    make_session_factory,
    pending_after_commit,
    pending_invalidations,
)
from sluicegate.core.events import session_info
from sluicegate.core.invalidation import (
    InvalidationBus,
    MemoryInvalidationBus,
    RedisInvalidationBus,
)
from sluicegate.guard.counters import CounterStoreUnavailable, GuardStore
from sluicegate.guard.memory import MemoryGuardStore
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.handlers import event_handlers
from sluicegate.keys.tree import KeysOnTheTree
from sluicegate.metering.stream import UsageJournal
from sluicegate.orgs.tree_keys import session_info as tree_keys_info
from sluicegate.settings import Settings

# Readiness answers within a load balancer's probe timeout even when a dependency hangs.
CHECK_TIMEOUT_SECONDS = 2.0
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0

log = logging.getLogger("sluicegate.runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis | None
    counters: GuardStore
    bus: InvalidationBus
    clock: Clock
    # With Redis: the usage events this process appended lately (metering/stream.py).
    journal: UsageJournal | None = None
    # SQLite (embedded, one process) starts a transaction only at its first write, so what a
    # unit of work read before writing could change under it: units of work take turns instead.
    # Postgres needs no such lock: its transactions and row locks do the job across replicas.
    _serial: asyncio.Lock | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, clock: Clock | None = None) -> Runtime:
        clock = clock or SystemClock()
        engine = make_engine(
            settings.resolved_database_url,
            pool_size=settings.database_pool_size,
            timeouts=Timeouts(
                settings.database_connect_timeout,
                settings.database_pool_timeout,
                settings.database_statement_timeout,
            ),
        )
        redis: Redis | None = None
        counters: GuardStore
        bus: InvalidationBus
        journal: UsageJournal | None = None
        ttl_ms = settings.reservation_ttl_seconds * 1000
        if settings.redis_url is None:
            counters = MemoryGuardStore(clock, reservation_ttl_ms=ttl_ms)
            bus = MemoryInvalidationBus()
        else:
            redis = connect_redis(settings.redis_url, settings.redis_pool_size)
            journal = UsageJournal()
            counters = RedisGuardStore(
                redis, settings.redis_prefix, clock, reservation_ttl_ms=ttl_ms, journal=journal
            )
            bus = RedisInvalidationBus(redis, settings.redis_prefix)
        serial = asyncio.Lock() if settings.is_sqlite else None
        # Without a secret key (a Postgres deployment checking its dependencies before start-up
        # says it is missing) sessions carry no audit key, and appending to the trail fails.
        info = {**session_info(event_handlers(counters)), **tree_keys_info(KeysOnTheTree())}
        if settings.secret_key:
            info[SESSION_KEY] = audit_key(settings.secret)
        sessions = make_session_factory(engine, info)
        return cls(settings, engine, sessions, redis, counters, bus, clock, journal, serial)

    async def start(self) -> None:
        await self.bus.start()

    async def close(self) -> None:
        await self.bus.close()
        await self.counters.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        """A transaction: commit on success, roll back on error; then publish its invalidations
        and run its after-commit steps (after a rollback the session and its queues are dropped)."""
        async with self._turn(), self.sessions() as session:
            async with session.begin():
                yield session
            for topic, payload in pending_invalidations(session):
                await self.bus.publish(topic, payload)
            for action in pending_after_commit(session):
                try:
                    await action()
                except Exception:
                    # Committed already: the change stands; whatever the action keeps in sync
                    # repairs itself (see the callers), so the request is not failed for it.
                    log.warning("an after-commit step failed", exc_info=True)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        if self._serial is None:
            yield
            return
        async with self._serial:
            yield

    async def check_database(self) -> str | None:
        """None when the database answers, else what went wrong in a few words."""
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return describe_failure(exc)
        return None

    async def check_redis(self) -> str | None:
        """None when Redis answers or is not used (embedded), else what went wrong."""
        if self.redis is None:
            return None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await self.counters.ping()
        except (CounterStoreUnavailable, TimeoutError) as exc:
            return describe_failure(exc)
        return None


def connect_redis(url: str, pool_size: int) -> Redis:
    """A client whose pool makes callers wait for a free connection instead of failing at once
    under a burst; a caller still waiting after the timeout gets an error it can act on."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        # One immediate retry on a fresh connection: a pooled connection to a Redis that has
        # restarted fails once, and that must not reach a client as an error.
        retry=Retry(NoBackoff(), 1),
        timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        health_check_interval=15,
    )
    return Redis(connection_pool=pool)


def describe_failure(exc: BaseException) -> str:
    """One line a person can act on, from whatever a driver raised."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} seconds"
    cause: BaseException = exc
    # SQLAlchemy wraps driver errors; the original says what actually happened.
    while getattr(cause, "orig", None) is not None:
        cause = cause.orig  # type: ignore[attr-defined]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text_ = str(cause).strip().splitlines()
    return text_[0] if text_ else type(cause).__name__


def redacted_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
