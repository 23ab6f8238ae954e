"""Failing open (SLUICEGATE_GUARD_FAILURE_MODE=open): while Redis cannot be reached, a gateway
process admits the requests it can judge alone, against counters of its own.

What one process can judge alone: rate limits (each process counts its own traffic, so up to
one limit per process passes during the outage) and soft budgets (they never refuse). What it
cannot: a hard budget or prepaid credit, since every other process spends the same money
meanwhile and none can know how much; such requests are refused (503) whatever the mode, so
no outage can take spend past a hard limit.

What was spent meanwhile is not lost to the shared counters. The usage events go to the
database directly; the counters each charge settled here touched are remembered, and once Redis
answers again and those events are stored, made missing (`GuardStore.unseed`), so they are
rebuilt from the database that holds them. Adding the charges instead could count them twice: a
counter rebuilt after Redis lost its data may hold some of them already.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from sluicegate.core.clock import Clock
from sluicegate.guard.counters import (
    Blocked,
    BudgetCounter,
    CounterStoreUnavailable,
    CreditCounter,
    Crossing,
    GuardStore,
    Loader,
    Plan,
    Reserved,
)
from sluicegate.guard.memory import MemoryGuardStore

# How long one attempt to recover waits for this process's usage events to reach the database.
STORED_WAIT_SECONDS = 2.0


class MoneyChecksUnavailable(CounterStoreUnavailable):
    """Redis is unreachable and the request is under a hard budget or prepaid credit: refused
    even when failing open."""


class FailOpen:
    def __init__(self, clock: Clock, reservation_ttl_ms: int) -> None:
        self._clock = clock
        self._ttl_ms = reservation_ttl_ms
        self._local = MemoryGuardStore(clock, reservation_ttl_ms=reservation_ttl_ms)
        # The in-process store that holds each local reservation, by request id.
        self._holders: dict[str, MemoryGuardStore] = {}
        # Charges settled here and not yet added to the shared counters, nano-USD per counter.
        self._deferred: dict[BudgetCounter | CreditCounter, int] = {}
        self._used = False
        self._recovering = asyncio.Lock()

    @property
    def active(self) -> bool:
        """Anything to do once Redis answers again: charges to add, counters to start anew."""
        return self._used or bool(self._deferred)

    async def reserve(self, plan: Plan, loader: Loader) -> Reserved | Blocked:
        """Judge the plan in this process; raises MoneyChecksUnavailable for a plan with a hard
        budget or the credit to check."""
        if plan.guards_money:
            raise MoneyChecksUnavailable(
                "Redis is unreachable and the request is under a hard budget or prepaid credit"
            )
        self._used = True
        result = await self._local.reserve(plan, loader)
        if isinstance(result, Reserved):
            self._holders[plan.request_id] = self._local
        return result

    def holds(self, reserved: Reserved) -> bool:
        return reserved.plan.request_id in self._holders

    async def settle(self, reserved: Reserved, cost: int, tokens: int) -> tuple[Crossing, ...]:
        """Settle a local reservation and remember its charge for the shared counters."""
        plan = reserved.plan
        store = self._holders.pop(plan.request_id)
        crossed = await store.settle(reserved, cost, tokens)
        if crossed is None:
            return ()
        if cost:
            counters: Sequence[BudgetCounter | CreditCounter] = [
                check for check in plan.checks if isinstance(check, BudgetCounter)
            ]
            for counter in (*counters, plan.credit):
                self._deferred[counter] = self._deferred.get(counter, 0) + cost
        return crossed

    async def recover(self, shared: GuardStore, stored: Callable[[], Awaitable[None]]) -> None:
        """Redis answers again: once the events settled here are in the database (`stored`
        returns then), make the counters they were charged on missing in the shared store, and
        start the next outage from fresh local counters (rebuilt from the database then).
        Raises CounterStoreUnavailable when Redis is still down, TimeoutError when the events
        are not stored within STORED_WAIT_SECONDS; nothing is lost, it is tried again."""
        async with self._recovering:
            if not self.active:
                return
            charged = dict(self._deferred)
            if charged:
                async with asyncio.timeout(STORED_WAIT_SECONDS):
                    await stored()
                await shared.unseed(list(charged))
            for counter, amount in charged.items():
                left = self._deferred[counter] - amount
                if left:
                    self._deferred[counter] = left
                else:
                    del self._deferred[counter]
            # Reservations still running keep the store that holds them (`_holders`).
            self._local = MemoryGuardStore(self._clock, reservation_ttl_ms=self._ttl_ms)
            self._used = False
