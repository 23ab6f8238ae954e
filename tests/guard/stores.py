"""Building blocks of the counter store tests: both stores on one manual clock, plans made of a
few counters, and a loader standing in for the database with known rebuilt values."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sluicegate.core.clock import ManualClock
from sluicegate.core.ids import new_id
from sluicegate.guard.counters import (
    BudgetCounter,
    Check,
    CreditCounter,
    CreditSeed,
    GuardStore,
    PendingCharge,
    Plan,
    RateCounter,
    Seed,
    SpendScope,
)
from sluicegate.guard.memory import MemoryGuardStore
from sluicegate.guard.redis import RedisGuardStore
from sluicegate.runtime import connect_redis

TTL_MS = 60_000
START = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def make_store(kind: str, clock: ManualClock, redis_url: str, prefix: str) -> GuardStore:
    if kind == "memory":
        return MemoryGuardStore(clock, reservation_ttl_ms=TTL_MS)
    # A connection for every concurrent caller the tests start (up to 200): with fewer, callers
    # queue for the pool, and on a busy machine a queued caller can outwait the pool timeout and
    # trip the store's breaker, which is not what these tests are about.
    return RedisGuardStore(
        connect_redis(redis_url, pool_size=256), prefix, clock, reservation_ttl_ms=TTL_MS
    )


async def close_store(store: GuardStore) -> None:
    if isinstance(store, RedisGuardStore):
        await store._client.aclose()


@dataclass
class Seeds:
    """The loader: what the database would say about each counter (0 / empty by default), and
    how often it was asked."""

    values: dict[str, Seed] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    # The pending charges each call was given (the usage stream's backlog, with Redis).
    pending: list[list[PendingCharge]] = field(default_factory=list)

    async def __call__(
        self, counters: Sequence[BudgetCounter | CreditCounter], pending: Sequence[PendingCharge]
    ) -> list[Seed]:
        self.pending.append(list(pending))
        out: list[Seed] = []
        for counter in counters:
            self.asked.append(counter.key)
            default: Seed = CreditSeed(0, 0, 0) if isinstance(counter, CreditCounter) else 0
            out.append(self.values.get(counter.key, default))
        return out


@dataclass
class Org:
    """An org of one test: fresh keys, so tests never see each other's counters."""

    id: str = field(default_factory=lambda: f"org_{uuid.uuid4().hex[:12]}")

    def budget(
        self,
        limit: int,
        *,
        hard: bool = True,
        name: str = "key",
        expire_at_ms: int = 0,
        thresholds: tuple[int, ...] = (),
    ) -> BudgetCounter:
        budget_id = f"bud_{name}_{uuid.uuid4().hex[:6]}"
        return BudgetCounter(
            key=f"{{{self.id}}}:b:{budget_id}:-:0",
            budget_id=budget_id,
            limit=limit,
            hard=hard,
            expire_at_ms=expire_at_ms,
            spend=SpendScope(self.id, "key", name, None, None),
            thresholds=thresholds,
        )

    @property
    def credit(self) -> CreditCounter:
        return CreditCounter(f"{{{self.id}}}:credit", self.id)

    def rate(self, limit: int, *, per_token: bool = False, name: str = "key") -> RateCounter:
        kind = "tpm" if per_token else "rpm"
        return RateCounter(f"{{{self.id}}}:rl:key:{name}:{kind}", limit, per_token, "key", name)

    def plan(
        self, amount: int, *checks: Check, tokens: int = 0, request_id: str | None = None
    ) -> Plan:
        return Plan(
            org_id=self.id,
            request_id=request_id or new_id("req"),
            amount=amount,
            tokens=tokens,
            checks=checks,
            credit=self.credit,
        )
