"""The proxy's cache of routing overrides (routing/cache.py): one snapshot per org, combined once
per group chain, dropped by the invalidation bus when an override changes (its TTL a backstop),
served stale through a database outage for a while, and never keeping what a load read before
a change it was overtaken by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import ManualClock
from sluicegate.core.db import make_engine, make_session_factory
from sluicegate.core.errors import DatabaseUnavailable
from sluicegate.core.invalidation import ALL_TOPICS, GUARD_TOPIC, ORG_TOPIC, ROUTING_TOPIC
from sluicegate.orgs.group_service import create_group
from sluicegate.providers.config import ProviderSettings
from sluicegate.routing import service
from sluicegate.routing.cache import (
    NO_OVERRIDES,
    OVERRIDES_TTL_SECONDS,
    RETRY_AFTER_ERROR_SECONDS,
    STALE_IF_ERROR_SECONDS,
    OrgOverrides,
    OverrideCache,
)
from sluicegate.routing.overrides import NO_OVERRIDE, RoutingOverride
from sluicegate.runtime import Runtime
from tests.factories import ServiceOrg, make_service_org

# Nothing listens there: connecting is refused at once.
UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:9/none"


@dataclass(frozen=True)
class Tree:
    org: ServiceOrg
    division: str
    team: str
    project: str

    @property
    def chain(self) -> tuple[str, ...]:
        """A project key's group chain, root first (as AuthContext.group_chain)."""
        return (self.org.root, self.division, self.team, self.project)


async def make_tree(runtime: Runtime) -> Tree:
    org = await make_service_org(runtime)
    async with runtime.unit_of_work() as session:
        division = await create_group(session, org.owner, org.id, name="division")
        team = await create_group(session, org.owner, org.id, name="team", parent_id=division.id)
        project = await create_group(session, org.owner, org.id, name="project", parent_id=team.id)
    return Tree(org, division.id, team.id, project.id)


async def put_override(runtime: Runtime, tree: Tree, group_id: str, **fields: Any) -> None:
    """Through the service the admin API calls, in a unit of work that publishes on commit."""
    async with runtime.unit_of_work() as session:
        await service.put_override(
            session,
            tree.org.owner,
            tree.org.id,
            group_id,
            RoutingOverride(**fields),
            providers=ProviderSettings.empty(),
            now=runtime.clock.now(),
        )


async def delete_override(runtime: Runtime, tree: Tree, group_id: str) -> None:
    async with runtime.unit_of_work() as session:
        await service.delete_override(session, tree.org.owner, tree.org.id, group_id)


class Switchable:
    """A session factory that reaches the real database, or one that refuses connections."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.up = sessions
        self.engine = make_engine(UNREACHABLE, pool_size=1)
        self.down = make_session_factory(self.engine, {})
        self.reachable = True

    def __call__(self) -> AsyncSession:
        return (self.up if self.reachable else self.down)()


@pytest.fixture
async def switchable(runtime: Runtime) -> AsyncIterator[Switchable]:
    sessions = Switchable(runtime.sessions)
    yield sessions
    await sessions.engine.dispose()


# --- snapshots ---------------------------------------------------------------------------------


def test_an_org_without_overrides_answers_no_override_from_one_shared_snapshot() -> None:
    assert NO_OVERRIDES.empty
    assert NO_OVERRIDES.for_chain(("grp_a", "grp_b")) is NO_OVERRIDE
    assert OrgOverrides({}).for_chain(("grp_a",)) is NO_OVERRIDE


def test_a_snapshot_combines_each_chain_once() -> None:
    snapshot = OrgOverrides(
        {
            "root": RoutingOverride(provider_order=("a",), max_cost_per_request_nusd=5),
            "team": RoutingOverride(provider_order=("b",)),
        }
    )
    first = snapshot.for_chain(("root", "div", "team", "project"))
    assert first.override.provider_order == ("b",)
    assert first.override.max_cost_per_request_nusd == 5
    assert first.source == {"provider_order": "team", "max_cost_per_request_nusd": "root"}
    assert snapshot.for_chain(("root", "div", "team", "project")) is first
    # A chain through none of the groups with overrides is routed as usual.
    assert snapshot.for_chain(("elsewhere", "else")) is NO_OVERRIDE


async def test_an_org_without_overrides_is_loaded_as_the_shared_snapshot(runtime: Runtime) -> None:
    tree = await make_tree(runtime)
    cache = OverrideCache(runtime.sessions, ManualClock())
    assert await cache.get(tree.org.id) is NO_OVERRIDES
    assert await cache.get("org_unknown") is NO_OVERRIDES


async def test_the_cache_serves_the_nearest_override_per_field(runtime: Runtime) -> None:
    tree = await make_tree(runtime)
    await put_override(runtime, tree, tree.org.root, required_policies=frozenset({"zdr"}))
    await put_override(runtime, tree, tree.team, provider_order=("a",), fallbacks=("m",))
    await put_override(runtime, tree, tree.project, provider_order=("b",))
    cache = OverrideCache(runtime.sessions, ManualClock())
    snapshot = await cache.get(tree.org.id)
    routing = snapshot.for_chain(tree.chain)
    assert routing.override == RoutingOverride(
        provider_order=("b",), fallbacks=("m",), required_policies=frozenset({"zdr"})
    )
    assert routing.source == {
        "provider_order": tree.project,
        "fallbacks": tree.team,
        "required_policies": tree.org.root,
    }
    team_key = snapshot.for_chain(tree.chain[:3])
    assert team_key.override.provider_order == ("a",)
    assert await cache.get(tree.org.id) is snapshot


# --- invalidation --------------------------------------------------------------------------------


async def test_a_change_reaches_the_cache_over_the_bus_at_once(runtime: Runtime) -> None:
    tree = await make_tree(runtime)
    other = await make_tree(runtime)
    await put_override(runtime, other, other.team, provider_order=("other",))
    cache = OverrideCache(runtime.sessions, ManualClock())
    runtime.bus.subscribe(cache.invalidate)
    try:
        assert (await cache.get(tree.org.id)).for_chain(tree.chain) is NO_OVERRIDE
        kept = await cache.get(other.org.id)
        await put_override(runtime, tree, tree.team, provider_order=("a",))
        routing = (await cache.get(tree.org.id)).for_chain(tree.chain)
        assert routing.override.provider_order == ("a",)
        # Another org's snapshot stays.
        assert await cache.get(other.org.id) is kept
        await delete_override(runtime, tree, tree.team)
        assert (await cache.get(tree.org.id)).for_chain(tree.chain) is NO_OVERRIDE
    finally:
        runtime.bus.unsubscribe(cache.invalidate)


async def test_without_an_invalidation_the_ttl_is_the_backstop(runtime: Runtime) -> None:
    tree = await make_tree(runtime)
    clock = ManualClock()
    cache = OverrideCache(runtime.sessions, clock)  # not subscribed: it hears nothing
    assert await cache.get(tree.org.id) is NO_OVERRIDES
    await put_override(runtime, tree, tree.team, provider_order=("a",))
    clock.advance(OVERRIDES_TTL_SECONDS - 1)
    assert await cache.get(tree.org.id) is NO_OVERRIDES
    clock.advance(1)
    assert (await cache.get(tree.org.id)).for_chain(tree.chain).override.provider_order == ("a",)


@pytest.mark.parametrize(
    ("topic", "drops"),
    [
        (ROUTING_TOPIC, "org"),
        (ORG_TOPIC, "org"),
        (ALL_TOPICS, "all"),
        (GUARD_TOPIC, "none"),
    ],
)
async def test_which_messages_drop_which_snapshots(
    runtime: Runtime, topic: str, drops: str
) -> None:
    tree, other = await make_tree(runtime), await make_tree(runtime)
    cache = OverrideCache(runtime.sessions, ManualClock())
    assert await cache.get(tree.org.id) is NO_OVERRIDES
    assert await cache.get(other.org.id) is NO_OVERRIDES
    # Changed behind the cache's back: only a dropped snapshot is read again.
    await put_override(runtime, tree, tree.team, provider_order=("a",))
    await put_override(runtime, other, other.team, provider_order=("b",))
    await cache.invalidate(topic, "" if topic == ALL_TOPICS else tree.org.id)
    reloaded = {
        org_id for org_id in (tree.org.id, other.org.id) if not (await cache.get(org_id)).empty
    }
    expected = {"org": {tree.org.id}, "all": {tree.org.id, other.org.id}, "none": set()}
    assert reloaded == expected[drops]


# --- the database away -------------------------------------------------------------------------


async def test_a_recent_snapshot_serves_through_a_database_outage(
    runtime: Runtime, switchable: Switchable
) -> None:
    tree = await make_tree(runtime)
    await put_override(runtime, tree, tree.team, provider_order=("a",))
    clock = ManualClock()
    cache = OverrideCache(switchable, clock)
    loaded = await cache.get(tree.org.id)
    switchable.reachable = False
    clock.advance(OVERRIDES_TTL_SECONDS)
    assert await cache.get(tree.org.id) is loaded
    # The database is asked again only after a pause, and the snapshot keeps serving.
    clock.advance(RETRY_AFTER_ERROR_SECONDS)
    assert await cache.get(tree.org.id) is loaded
    clock.advance(STALE_IF_ERROR_SECONDS)
    with pytest.raises(DatabaseUnavailable):
        await cache.get(tree.org.id)
    switchable.reachable = True
    assert (await cache.get(tree.org.id)).for_chain(tree.chain).override.provider_order == ("a",)


async def test_a_change_published_during_an_outage_still_drops_the_snapshot(
    runtime: Runtime, switchable: Switchable
) -> None:
    tree = await make_tree(runtime)
    cache = OverrideCache(switchable, ManualClock())
    assert await cache.get(tree.org.id) is NO_OVERRIDES
    switchable.reachable = False
    await cache.invalidate(ROUTING_TOPIC, tree.org.id)
    with pytest.raises(DatabaseUnavailable):
        await cache.get(tree.org.id)
    # Without anything cached, an outage is an error from the start.
    with pytest.raises(DatabaseUnavailable):
        await cache.get("org_never_loaded")


# --- loads overtaken by a change -----------------------------------------------------------------


class Gated:
    """Sessions whose unit of work, once it has read, waits for `release` before it ends."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        self.opened = 0

    def __call__(self) -> Any:
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        self.opened += 1
        async with self.sessions() as session:
            yield session
        self.read.set()
        await self.release.wait()


async def test_a_load_overtaken_by_a_change_answers_its_callers_but_is_not_kept(
    runtime: Runtime,
) -> None:
    tree = await make_tree(runtime)
    gated = Gated(runtime.sessions)
    cache = OverrideCache(gated, ManualClock())
    first = asyncio.create_task(cache.get(tree.org.id))
    await gated.read.wait()
    joined = asyncio.create_task(cache.get(tree.org.id))  # shares the load under way
    await put_override(runtime, tree, tree.team, provider_order=("a",))
    await cache.invalidate(ROUTING_TOPIC, tree.org.id)
    gated.release.set()
    # Asked before the change: they get what was read then.
    assert await first is NO_OVERRIDES
    assert await joined is NO_OVERRIDES
    assert gated.opened == 1
    # Asked after it: read again, and the change is there.
    routing = (await cache.get(tree.org.id)).for_chain(tree.chain)
    assert routing.override.provider_order == ("a",)
    assert gated.opened == 2


async def test_concurrent_callers_share_one_load(runtime: Runtime) -> None:
    tree = await make_tree(runtime)
    await put_override(runtime, tree, tree.team, provider_order=("a",))
    gated = Gated(runtime.sessions)
    gated.release.set()
    cache = OverrideCache(gated, ManualClock())
    answers = await asyncio.gather(*(cache.get(tree.org.id) for _ in range(20)))
    assert gated.opened == 1
    assert all(answer is answers[0] for answer in answers)
