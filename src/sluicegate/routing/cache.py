"""The routing overrides of one org as the proxy uses them, cached per process and dropped over the
invalidation bus (ROUTING_TOPIC, payload the org id) when an override changes.

`OverrideCache.get(org_id)` gives the org's snapshot, `OrgOverrides`; its `for_chain(chain)`
gives the routing in force for a key's group chain (root first, as `AuthContext.group_chain`),
combined once per chain and memoized. An org without overrides shares one empty snapshot, whose
answer is always `NO_OVERRIDE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.invalidation import ORG_TOPIC, ROUTING_TOPIC
from sluicegate.core.org_cache import CachePolicy, OrgCache
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


class OverrideCache(OrgCache[OrgOverrides]):
    """Org overrides by org id (core/org_cache.py: loaded on first use, dropped over the bus on
    ROUTING_TOPIC or ORG_TOPIC, served stale through a database outage)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        super().__init__(
            sessions,
            clock,
            load_org_overrides,
            (ROUTING_TOPIC, ORG_TOPIC),
            CachePolicy(OVERRIDES_TTL_SECONDS, STALE_IF_ERROR_SECONDS, RETRY_AFTER_ERROR_SECONDS),
        )
