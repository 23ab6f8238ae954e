"""The routing overrides of one org as the proxy uses them, cached per process and dropped over the
invalidation bus (ROUTING_TOPIC, payload the org id) when an override changes.

`OverrideCache.get(org_id)` gives the org's snapshot, `OrgOverrides`; its `for_chain(chain)`
gives the routing in force for a key's group chain (root first, as `AuthContext.group_chain`),
combined once per chain and memoized. An org without overrides shares one empty snapshot, whose
answer is always `NO_OVERRIDE`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.db import reaching_database
from sluicegate.core.errors import DatabaseUnavailable
from sluicegate.core.invalidation import ALL_TOPICS, ORG_TOPIC, ROUTING_TOPIC
from sluicegate.routing import repository
from sluicegate.routing.overrides import (
    NO_OVERRIDE,
    EffectiveRouting,
    RoutingOverride,
    effective,
)

# Backstop only: changes arrive over the bus within milliseconds.
OVERRIDES_TTL_SECONDS = 30.0
# As for keys and guard rules (keys/lookup.py, guard/rules.py): overrides loaded this recently
# serve through a database outage, and the database is asked again at most this often meanwhile.
STALE_IF_ERROR_SECONDS = 600.0
RETRY_AFTER_ERROR_SECONDS = 2.0
# Chains whose combined routing one snapshot keeps (an org has one chain per group in use);
# beyond it the memo starts over rather than grow without bound.
MAX_CHAINS_PER_ORG = 50_000


class OrgOverrides:
    """A snapshot of one org's overrides by group id."""

    __slots__ = ("_by_group", "_chains")

    def __init__(self, by_group: Mapping[str, RoutingOverride]) -> None:
        self._by_group = MappingProxyType(dict(by_group))
        self._chains: dict[tuple[str, ...], EffectiveRouting] = {}

    @property
    def by_group(self) -> Mapping[str, RoutingOverride]:
        return self._by_group

    @property
    def empty(self) -> bool:
        return not self._by_group

    def for_chain(self, group_chain: tuple[str, ...]) -> EffectiveRouting:
        """The routing in force for a key whose group chain is `group_chain` (root first): each
        field from the nearest group that sets it."""
        if not self._by_group:
            return NO_OVERRIDE
        found = self._chains.get(group_chain)
        if found is None:
            if len(self._chains) >= MAX_CHAINS_PER_ORG:
                self._chains.clear()
            found = effective([(g, self._by_group[g]) for g in group_chain if g in self._by_group])
            self._chains[group_chain] = found
        return found


# Shared by every org without overrides: nothing to combine, nothing to memoize.
NO_OVERRIDES = OrgOverrides({})


async def load_org_overrides(session: AsyncSession, org_id: str) -> OrgOverrides:
    """The org's snapshot as it is in the database now (the admin API reads the same)."""
    rows = await repository.overrides_of_org(session, org_id)
    if not rows:
        return NO_OVERRIDES
    return OrgOverrides({row.group_id: row.as_override() for row in rows})


@dataclass(slots=True)
class _Entry:
    overrides: OrgOverrides
    fresh_until: float  # monotonic seconds
    loaded_at: float


class OverrideCache:
    """Org overrides by org id, loaded on first use, dropped when the bus says they changed.
    While the database cannot be reached, a snapshot loaded recently keeps being used; a change
    published meanwhile still drops it. A load that was under way when its org was invalidated
    answers the request that started it but is not kept."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[OrgOverrides]] = {}
        # Bumped by every invalidation of the org (`_epoch` by every one of all orgs): a load
        # that began before it must not store what it read.
        self._generations: dict[str, int] = {}
        self._epoch = 0

    async def get(self, org_id: str) -> OrgOverrides:
        entry = self._entries.get(org_id)
        now = self._clock.monotonic()
        if entry is not None and entry.fresh_until > now:
            return entry.overrides
        pending = self._loading.get(org_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OrgOverrides] = asyncio.get_running_loop().create_future()
        self._loading[org_id] = future
        try:
            overrides = await self._fetch(org_id, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            if self._loading.get(org_id) is future:
                del self._loading[org_id]
        future.set_result(overrides)
        return overrides

    async def _fetch(self, org_id: str, now: float) -> OrgOverrides:
        seen = self._version(org_id)
        try:
            async with reaching_database(), self._sessions() as session:
                overrides = await load_org_overrides(session, org_id)
        except DatabaseUnavailable:
            entry = self._entries.get(org_id)
            if entry is None or now - entry.loaded_at > STALE_IF_ERROR_SECONDS:
                raise
            entry.fresh_until = now + RETRY_AFTER_ERROR_SECONDS
            return entry.overrides
        if self._version(org_id) == seen:
            self._entries[org_id] = _Entry(overrides, now + OVERRIDES_TTL_SECONDS, now)
        return overrides

    def _version(self, org_id: str) -> tuple[int, int]:
        return self._epoch, self._generations.get(org_id, 0)

    async def invalidate(self, topic: str, payload: str) -> None:
        """The bus handler: `ROUTING_TOPIC` or `ORG_TOPIC` with an org id drops that org's
        snapshot, `ALL_TOPICS` (a subscriber that reconnected) drops every one."""
        if topic == ALL_TOPICS:
            self._entries.clear()
            self._loading.clear()
            self._generations.clear()
            self._epoch += 1
        elif topic in (ROUTING_TOPIC, ORG_TOPIC):
            self._entries.pop(payload, None)
            # Later callers start a load of their own instead of joining one that may have read
            # the database before the change.
            self._loading.pop(payload, None)
            self._generations[payload] = self._generations.get(payload, 0) + 1
