"""What the proxy keeps for the life of the process: routes, adapters, upstream pools, the
key resolver, the guard (rules cache and counter store), the groups' routing overrides (cached
per org) and the usage writer. Built in the app's lifespan, closed with it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.invalidation import InvalidationBus
from sluicegate.guard.counters import GuardStore
from sluicegate.guard.enforcer import Guard
from sluicegate.keys.lookup import KeyResolver, mark_keys_used
from sluicegate.metering.stream import UsageJournal, UsageStreams
from sluicegate.metering.writer import UsageWriter
from sluicegate.providers.base import Adapter
from sluicegate.providers.config import ProviderSettings, ServedModel
from sluicegate.providers.registry import build_adapter, upstream_pool
from sluicegate.providers.transport import Pool
from sluicegate.proxy.route import RoutePlanner
from sluicegate.routing.balance import Balancer
from sluicegate.routing.cache import OverrideCache
from sluicegate.routing.health import HealthBoard, HealthRules
from sluicegate.routing.overrides import OverrideSource
from sluicegate.routing.plan import Router
from sluicegate.settings import Settings


class ProxyResources(Protocol):
    """What the proxy needs of the process's resources (sluicegate/runtime.py `Runtime`)."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    bus: InvalidationBus
    counters: GuardStore
    redis: Redis | None
    journal: UsageJournal | None


@dataclass
class ProxyState:
    settings: Settings
    runtime: ProxyResources
    models: dict[str, ServedModel]
    adapters: dict[str, Adapter]
    pools: dict[str, Pool]
    resolver: KeyResolver
    writer: UsageWriter
    guard: Guard
    # The durable usage log (Redis); None in the embedded mode, where the writer is the log.
    streams: UsageStreams | None
    health: HealthBoard
    balancer: Balancer
    planner: RoutePlanner
    # The groups' routing overrides, cached per org (routing/cache.py); None: none apply.
    overrides: OverrideSource | None = None

    @classmethod
    def build(
        cls, settings: Settings, runtime: ProxyResources, providers: ProviderSettings
    ) -> ProxyState:
        adapters = {name: build_adapter(config) for name, config in providers.providers.items()}
        proxies = settings.outbound_proxies
        pools = {
            name: upstream_pool(
                config,
                connect=settings.upstream_connect_timeout,
                read=settings.upstream_read_timeout,
                proxies=proxies,
            )
            for name, config in providers.providers.items()
        }
        resolver = KeyResolver(runtime.sessions, settings.secret, runtime.clock)
        runtime.bus.subscribe(resolver.invalidate)
        writer = UsageWriter(runtime.sessions, after_insert=mark_keys_used)
        guard = Guard(
            runtime.counters,
            runtime.sessions,
            runtime.clock,
            fail_open=settings.guard_failure_mode == "open",
            reservation_ttl_seconds=settings.reservation_ttl_seconds,
            events_stored=writer.caught_up,
        )
        runtime.bus.subscribe(guard.rules.invalidate)
        health = HealthBoard(
            HealthRules(
                allowed_fails=settings.routing_allowed_fails,
                window_seconds=settings.routing_failure_window_seconds,
                cooldown_seconds=settings.routing_cooldown_seconds,
            ),
            runtime.clock,
            runtime.bus,
            runtime.redis,
            settings.redis_prefix,
        )
        runtime.bus.subscribe(health.on_message)
        overrides = OverrideCache(runtime.sessions, runtime.clock)
        runtime.bus.subscribe(overrides.invalidate)
        balancer = Balancer()
        models = dict(providers.models)
        return cls(
            settings,
            runtime,
            models,
            adapters,
            pools,
            resolver,
            writer,
            guard,
            UsageStreams(runtime.redis, settings.redis_prefix, runtime.journal)
            if runtime.redis
            else None,
            health,
            balancer,
            RoutePlanner(models, Router(health, balancer)),
            overrides,
        )

    async def start(self) -> None:
        await self.writer.start()
        await self.guard.start()

    async def close(self) -> None:
        self.runtime.bus.unsubscribe(self.resolver.invalidate)
        self.runtime.bus.unsubscribe(self.guard.rules.invalidate)
        self.runtime.bus.unsubscribe(self.health.on_message)
        if isinstance(self.overrides, OverrideCache):
            self.runtime.bus.unsubscribe(self.overrides.invalidate)
        await self.guard.close()
        await self.guard.drain()
        await self.writer.close()
        await asyncio.gather(*(pool.aclose() for pool in self.pools.values()))
