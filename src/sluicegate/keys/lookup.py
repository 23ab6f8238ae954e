"""Key lookup for the proxy: digest -> AuthContext, cached in-process, invalidated over the bus.

A cache hit costs one HMAC and one dict lookup, no database round trip. Entries expire after a
short TTL as a backstop; the invalidation bus drops them at once when a key, its owner or its
org changes, so a disabled key is refused within a second on every worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.db import reaching_database
from sluicegate.core.digests import secret_digest
from sluicegate.core.errors import DatabaseUnavailable
from sluicegate.core.invalidation import ALL_TOPICS, GROUP_TOPIC, KEY_TOPIC, ORG_TOPIC, USER_TOPIC
from sluicegate.keys import repository
from sluicegate.keys.models import ApiKey

# Backstop only: invalidations normally arrive within milliseconds.
POSITIVE_TTL_SECONDS = 10.0
# A digest that matches no key cannot start matching one (new keys have new random secrets),
# so unknown keys may be remembered longer; this shields the database from key-guessing floods.
NEGATIVE_TTL_SECONDS = 60.0
# Bounded so that a flood of random keys cannot grow memory without limit.
MAX_ENTRIES = 100_000
# While the database cannot be reached, an entry loaded within this many seconds keeps being
# used (keys known to work keep working through a short outage; a change published meanwhile
# still drops its entry, so a disabled key is refused rather than served stale), and the
# database is asked again at most every RETRY_AFTER_ERROR_SECONDS instead of on every call.
STALE_IF_ERROR_SECONDS = 600.0
RETRY_AFTER_ERROR_SECONDS = 2.0
__all__ = ["KEY_TOPIC", "ORG_TOPIC", "USER_TOPIC", "AuthContext", "KeyResolver"]


@dataclass(frozen=True, slots=True)
class AuthContext:
    """What the proxy knows about the caller after authentication."""

    key_id: str
    key_status: str
    key_expires_at: datetime | None
    allowed_models: tuple[str, ...] | None
    org_id: str
    org_deleted: bool
    group_id: str
    group_chain: tuple[str, ...]  # root .. the key's group
    owner_user_id: str
    owner_status: str  # active | frozen
    owner_is_member: bool  # False once removed from the org


class KeyResolver:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pepper: bytes, clock: Clock
    ) -> None:
        self._sessions = sessions
        self._pepper = pepper
        self._clock = clock
        # digest -> (context, fresh until, loaded at), monotonic seconds
        self._entries: dict[str, tuple[AuthContext | None, float, float]] = {}
        # One database load per digest at a time: a burst of requests with a cold key waits
        # for the first load instead of sending the same query hundreds of times.
        self._loading: dict[str, asyncio.Future[AuthContext | None]] = {}

    async def resolve(self, secret: str) -> AuthContext | None:
        digest = secret_digest(self._pepper, secret)
        now = self._clock.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > now:
            return entry[0]
        pending = self._loading.get(digest)
        if pending is not None:
            await asyncio.wait({pending})
            if not pending.cancelled():
                return pending.result()
            # The first load failed; this caller tries on its own and reports its own error.
            return await self._fetch(digest, now)
        future: asyncio.Future[AuthContext | None] = asyncio.get_running_loop().create_future()
        self._loading[digest] = future
        try:
            context = await self._fetch(digest, now)
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._loading[digest]
        future.set_result(context)
        return context

    async def _fetch(self, digest: str, now: float) -> AuthContext | None:
        """Load and remember; while the database is unavailable, what was loaded recently."""
        try:
            context = await self._load(digest)
        except DatabaseUnavailable:
            entry = self._entries.get(digest)
            if entry is None or now - entry[2] > STALE_IF_ERROR_SECONDS:
                raise
            self._entries[digest] = (entry[0], now + RETRY_AFTER_ERROR_SECONDS, entry[2])
            return entry[0]
        self._remember(digest, context, now)
        return context

    def _remember(self, digest: str, context: AuthContext | None, now: float) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            # Oldest first: dicts keep insertion order, and a refreshed entry is re-inserted.
            for stale in list(self._entries)[: MAX_ENTRIES // 10]:
                del self._entries[stale]
        self._entries.pop(digest, None)
        ttl = POSITIVE_TTL_SECONDS if context is not None else NEGATIVE_TTL_SECONDS
        self._entries[digest] = (context, now + ttl, now)

    async def _load(self, digest: str) -> AuthContext | None:
        async with reaching_database(), self._sessions() as session:
            row = await repository.auth_row(session, digest)
        if row is None:
            return None
        m = row._mapping
        allowed = m["allowed_models"]
        expires_at = m["expires_at"]
        if m["digest"] != digest:
            # The secret replaced by a rotation, still honoured for its grace period.
            grace_end = m["previous_expires_at"]
            expires_at = grace_end if expires_at is None else min(expires_at, grace_end)
        return AuthContext(
            key_id=m["id"],
            key_status=m["status"],
            key_expires_at=expires_at,
            allowed_models=tuple(allowed) if allowed is not None else None,
            org_id=m["org_id"],
            org_deleted=m["org_deleted_at"] is not None,
            group_id=m["group_id"],
            group_chain=tuple(m["path"].split("/")),
            owner_user_id=m["owner_user_id"],
            owner_status=m["owner_status"],
            owner_is_member=m["membership_status"] == "active",
        )

    async def invalidate(self, topic: str, payload: str) -> None:
        """Bus handler: drop what the message names (everything, for ALL_TOPICS)."""
        if topic == ALL_TOPICS:
            self._entries.clear()
            return
        if topic == GROUP_TOPIC:
            doomed = [
                digest
                for digest, (context, _, _) in self._entries.items()
                if context is not None and payload in context.group_chain
            ]
        else:
            field = {KEY_TOPIC: "key_id", USER_TOPIC: "owner_user_id", ORG_TOPIC: "org_id"}.get(
                topic
            )
            if field is None:
                return
            doomed = [
                digest
                for digest, (context, _, _) in self._entries.items()
                if context is not None and getattr(context, field) == payload
            ]
        for digest in doomed:
            del self._entries[digest]


_KEYS = cast(Table, ApiKey.__table__)
# A Core statement (not ORM) so a list of parameters runs as one executemany.
_MARK_USED = (
    update(_KEYS)
    .where(
        _KEYS.c.id == bindparam("key"),
        or_(_KEYS.c.last_used_at.is_(None), _KEYS.c.last_used_at < bindparam("used")),
    )
    # Keep updated_at: a key being used is not a change to the key.
    .values(last_used_at=bindparam("used"), updated_at=_KEYS.c.updated_at)
)


async def mark_keys_used(session: AsyncSession, events: Sequence[Mapping[str, Any]]) -> None:
    """Stamp each key's last use from a batch of usage events: one row update per key and batch,
    off the response path (the usage writer calls this in its own transaction)."""
    latest: dict[str, datetime] = {}
    for event in events:
        key_id, moment = event["key_id"], event["created_at"]
        if key_id not in latest or latest[key_id] < moment:
            latest[key_id] = moment
    if latest:
        await session.execute(
            _MARK_USED, [{"key": key_id, "used": moment} for key_id, moment in latest.items()]
        )
