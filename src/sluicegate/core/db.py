"""The data layer's shared pieces: declarative Base, column types, one engine and session factory.

Both backends go through here: `postgresql+asyncpg` in production, `sqlite+aiosqlite` embedded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

from sluicegate.core.errors import DatabaseUnavailable

# Named constraints make migrations reproducible and let SQLite's batch mode find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite waits this long for a competing writer instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on both backends (SQLite stores no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSONB on Postgres (indexable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long a Postgres call may wait, in seconds: to connect, for a pooled connection, and
    per statement (measured by the client, so a database gone silent is bounded too)."""

    connect: float
    pool: float
    statement: float


def make_engine(
    url: str, *, pool_size: int = 10, echo: bool = False, timeouts: Timeouts | None = None
) -> AsyncEngine:
    """One engine per process. SQLite gets WAL and enforced foreign keys on every connection.
    Without `timeouts` (migrations, scripts) Postgres calls wait as long as they take."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    bounds: dict[str, Any] = {}
    if timeouts is not None:
        bounds = {
            "pool_timeout": timeouts.pool,
            "connect_args": {"timeout": timeouts.connect, "command_timeout": timeouts.statement},
        }
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Postgres closes idle connections behind load balancers; recycle before they go stale.
        pool_recycle=1800,
        **bounds,
    )


# Where the errors of a database that cannot be reached come from: a driver's own OSError or
# TimeoutError is the database's only if it was raised inside these packages.
_DATABASE_PACKAGES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3")


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or did not answer (refused, reset,
    timed out, pool exhausted, connection lost), as opposed to a bug or a bad query."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (OSError, TimeoutError)):
        return _raised_in_database_code(exc)
    return False


def _raised_in_database_code(exc: BaseException) -> bool:
    trace = exc.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if module.split(".", 1)[0] in _DATABASE_PACKAGES:
            return True
        trace = trace.tb_next
    return False


def describe_database_failure(exc: BaseException) -> str:
    """A few words on what went wrong, never a query or a parameter."""
    if isinstance(exc, (TimeoutError, sa_exc.TimeoutError)):
        return "no answer in time"
    cause: BaseException = exc
    while getattr(cause, "orig", None) is not None:
        cause = cause.orig  # type: ignore[attr-defined]
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return type(cause).__name__


@asynccontextmanager
async def reaching_database() -> AsyncIterator[None]:
    """Turn a database that cannot be reached into DatabaseUnavailable (503); anything else
    passes through as it is."""
    try:
        yield
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable(
                f"the database is unavailable ({describe_database_failure(exc)}); retry shortly"
            ) from exc
        raise


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """`info` is copied into every session's `info` (e.g. the audit key)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


def dialect_insert(dialect: str) -> Callable[[Any], Any]:
    """The INSERT construct with ON CONFLICT of the backend (Postgres or SQLite)."""
    if dialect == "postgresql":
        return postgres_insert
    if dialect == "sqlite":
        return sqlite_insert
    raise ValueError(f"Sluicegate writes to Postgres or SQLite, not {dialect}")


INVALIDATIONS_KEY = "sluicegate.invalidations"


def invalidate_after_commit(session: AsyncSession, topic: str, payload: str) -> None:
    """Queue a cache invalidation; the unit of work publishes it only once the commit succeeded,
    so no worker drops its cache for a change that was rolled back."""
    session.info.setdefault(INVALIDATIONS_KEY, []).append((topic, payload))


def pending_invalidations(session: AsyncSession) -> list[tuple[str, str]]:
    queued: list[tuple[str, str]] = session.info.pop(INVALIDATIONS_KEY, [])
    return queued


AFTER_COMMIT_KEY = "sluicegate.after_commit"
AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, action: AfterCommit) -> None:
    """Run `action` once the unit of work committed (dropped on rollback): a side effect outside
    the database, such as folding a top-up into the credit counter."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(action)


def pending_after_commit(session: AsyncSession) -> list[AfterCommit]:
    queued: list[AfterCommit] = session.info.pop(AFTER_COMMIT_KEY, [])
    return queued


@asynccontextmanager
async def transaction(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A unit of work: commit when the block succeeds, roll back when it raises."""
    async with factory() as session, session.begin():
        yield session
