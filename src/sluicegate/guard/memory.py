"""The counter store of the embedded single process: the same contract as the Redis scripts, in
Python. Each call runs without awaiting between its reads and writes, so it is atomic in asyncio."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from sluicegate.core.clock import Clock, SystemClock
from sluicegate.guard.counters import (
    MAX_SEED_ROUNDS,
    RATE_WINDOW_MS,
    READ_SWEEP_BATCHES,
    SETTLED_MEMORY_MS,
    SWEEP_BATCH,
    Blocked,
    BudgetCounter,
    Check,
    CounterStoreUnavailable,
    CounterValue,
    CreditCounter,
    CreditSeed,
    Crossing,
    Loader,
    PendingCharge,
    Plan,
    RateCounter,
    RateState,
    Reserved,
    crossings_of,
    org_of,
    rate_retry_ms,
    rate_window,
    sliding_usage,
)

# Forgotten counters and old rate windows are pruned once this many operations have passed.
PRUNE_EVERY = 10_000
MIN_SEEDED_LIFE_MS = 1000


class _Budget:
    __slots__ = ("expire_at_ms", "reserved", "spent")

    def __init__(self, spent: int, expire_at_ms: int) -> None:
        self.spent = spent
        self.reserved = 0
        self.expire_at_ms = expire_at_ms


class _Credit:
    __slots__ = ("balance", "reserved", "total", "version")

    def __init__(self, seed: CreditSeed) -> None:
        self.balance = seed.balance
        self.reserved = 0
        self.total = seed.total
        self.version = seed.version


class MemoryGuardStore:
    backend = "memory"

    def __init__(self, clock: Clock | None = None, *, reservation_ttl_ms: int = 900_000) -> None:
        self._clock = clock or SystemClock()
        self._ttl_ms = reservation_ttl_ms
        self._budgets: dict[str, _Budget] = {}
        self._credits: dict[str, _Credit] = {}
        self._rates: dict[str, int] = {}  # "<key>:<window index>" -> count
        # request id -> (deadline, [(counter key, amount)]); the heap orders deadlines per org.
        self._held: dict[str, tuple[int, list[tuple[str, int]]]] = {}
        self._deadlines: dict[str, list[tuple[int, str]]] = {}
        self._settled: dict[str, int] = {}  # request id -> forget after (ms)
        self._operations = 0

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    # --- the contract ------------------------------------------------------------------------

    async def reserve(self, plan: Plan, loader: Loader) -> Reserved | Blocked:
        await self._ensure(plan.checks, loader)
        # No await from here on: the checks and the reservation are one atomic step.
        now = self._now_ms()
        if plan.request_id in self._held:
            return Reserved(plan, now, ())
        self._sweep(plan.org_id, now)
        index, elapsed = rate_window(now)
        rates: list[RateState] = []
        for check in plan.checks:
            blocked = self._judge(check, plan, index, elapsed, rates)
            if blocked is not None:
                return blocked
        held: list[tuple[str, int]] = []
        for check in plan.checks:
            if isinstance(check, RateCounter):
                window = f"{check.key}:{index}"
                want = plan.tokens if check.per_token else 1
                self._rates[window] = self._rates.get(window, 0) + want
            elif isinstance(check, BudgetCounter):
                self._budgets[check.key].reserved += plan.amount
                held.append((check.key, plan.amount))
            else:
                self._credits[check.key].reserved += plan.amount
                held.append((check.key, plan.amount))
        if held:
            deadline = now + self._ttl_ms
            self._held[plan.request_id] = (deadline, held)
            heapq.heappush(self._deadlines.setdefault(plan.org_id, []), (deadline, plan.request_id))
        self._tick(now)
        return Reserved(plan, now, tuple(rates))

    async def settle(
        self,
        reserved: Reserved,
        cost: int,
        tokens: int,
        usage: bytes | None = None,
        *,
        stored: bool = False,
    ) -> tuple[Crossing, ...] | None:
        """`usage` and `stored` are ignored: in-process counters keep no log (the caller writes
        the event) and are settled only in this process."""
        plan = reserved.plan
        now = self._now_ms()
        if plan.request_id in self._settled:
            return None
        self._settled[plan.request_id] = now + self._ttl_ms + SETTLED_MEMORY_MS
        self._release(plan.request_id)
        crossed: list[Crossing] = []
        if cost:
            for check in plan.checks:
                if isinstance(check, BudgetCounter) and check.key in self._budgets:
                    budget = self._budgets[check.key]
                    before, budget.spent = budget.spent, budget.spent + cost
                    if check.thresholds:
                        crossed += crossings_of(check, before, budget.spent)
            credit = self._credits.get(plan.credit.key)
            if credit is not None:
                credit.balance -= cost
        delta = tokens - plan.tokens
        if delta:
            index = reserved.at_ms // RATE_WINDOW_MS
            for check in plan.checks:
                if isinstance(check, RateCounter) and check.per_token:
                    window = f"{check.key}:{index}"
                    if window in self._rates:
                        self._rates[window] = max(0, self._rates[window] + delta)
        return tuple(crossed)

    async def mark_started(self, reserved: Reserved, usage: bytes, cost: int) -> bool:
        """A process that dies takes these reservations with it, and its usage buffer too."""
        return reserved.plan.request_id in self._held

    async def extend(self, reserved: Reserved) -> bool:
        plan = reserved.plan
        held = self._held.get(plan.request_id)
        if held is None:
            return False
        deadline = self._now_ms() + self._ttl_ms
        self._held[plan.request_id] = (deadline, held[1])
        # The old heap entry stays behind; the sweep skips entries whose deadline moved.
        heapq.heappush(self._deadlines.setdefault(plan.org_id, []), (deadline, plan.request_id))
        return True

    async def read(
        self, counters: Sequence[BudgetCounter | CreditCounter], loader: Loader
    ) -> list[CounterValue]:
        await self._ensure(counters, loader)
        now = self._now_ms()
        for org_id in {org_of(counter) for counter in counters}:
            self._sweep(org_id, now, READ_SWEEP_BATCHES * SWEEP_BATCH)
        values = []
        for counter in counters:
            if isinstance(counter, BudgetCounter):
                budget = self._budgets[counter.key]
                values.append(CounterValue(budget.spent, budget.reserved))
            else:
                credit = self._credits[counter.key]
                values.append(CounterValue(credit.balance, credit.reserved))
        return values

    async def sync_credit(self, counter: CreditCounter, seed: CreditSeed) -> None:
        credit = self._credits.get(counter.key)
        if credit is None or seed.version <= credit.version:
            return
        credit.balance += seed.total - credit.total
        credit.total, credit.version = seed.total, seed.version

    async def peek(
        self, counters: Sequence[BudgetCounter | CreditCounter]
    ) -> list[CounterValue | None]:
        values: list[CounterValue | None] = []
        for counter in counters:
            budget = self._budgets.get(counter.key)
            credit = self._credits.get(counter.key)
            if budget is not None:
                values.append(CounterValue(budget.spent, budget.reserved))
            elif credit is not None:
                values.append(CounterValue(credit.balance, credit.reserved))
            else:
                values.append(None)
        return values

    async def pending_charges(self, org_id: str) -> list[PendingCharge]:
        return []  # this process writes every charge to the database itself

    async def unseed(self, counters: Sequence[BudgetCounter | CreditCounter]) -> None:
        await self.forget([counter.key for counter in counters])

    async def forget(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._budgets.pop(key, None)
            self._credits.pop(key, None)

    async def ping(self) -> None:
        return None

    async def heartbeat(self) -> None:
        """In-process counters are lost only with the process, and its reservations with them."""
        return None

    async def close(self) -> None:
        return None

    # --- the parts -----------------------------------------------------------------------------

    async def _ensure(self, checks: Sequence[Check], loader: Loader) -> None:
        """Seed every missing budget and credit counter from the loader. Other calls run while
        the loader awaits, so look again after seeding until nothing is missing."""
        for _ in range(MAX_SEED_ROUNDS):
            missing = [check for check in checks if self._missing(check)]
            if not missing:
                return
            # No charge is pending anywhere: this process settles and writes every one itself.
            seeds = await loader(missing, ())  # type: ignore[arg-type]
            for counter, seed in zip(missing, seeds, strict=True):
                self._seed(counter, seed)  # type: ignore[arg-type]
        raise CounterStoreUnavailable("counters vanished while they were being rebuilt")

    def _missing(self, check: Check) -> bool:
        if isinstance(check, BudgetCounter):
            budget = self._budgets.get(check.key)
            if budget is not None and budget.expire_at_ms and budget.expire_at_ms <= self._now_ms():
                del self._budgets[check.key]
                return True
            return budget is None
        if isinstance(check, CreditCounter):
            return check.key not in self._credits
        return False

    def _seed(self, counter: BudgetCounter | CreditCounter, seed: int | CreditSeed) -> None:
        # Seeding never overwrites: another call may have seeded (and used) it meanwhile.
        if isinstance(counter, BudgetCounter):
            if counter.key not in self._budgets:
                assert isinstance(seed, int)
                expire = counter.expire_at_ms
                if expire:
                    # As in Redis: a counter seeded just before its period ends lives a moment.
                    expire = max(expire, self._now_ms() + MIN_SEEDED_LIFE_MS)
                self._budgets[counter.key] = _Budget(seed, expire)
        elif counter.key not in self._credits:
            assert isinstance(seed, CreditSeed)
            self._credits[counter.key] = _Credit(seed)

    def _judge(
        self, check: Check, plan: Plan, index: int, elapsed: int, rates: list[RateState]
    ) -> Blocked | None:
        if isinstance(check, BudgetCounter):
            budget = self._budgets[check.key]
            if check.hard and budget.spent + budget.reserved + plan.amount > check.limit:
                return Blocked(check, budget.spent, budget.reserved)
            return None
        if isinstance(check, CreditCounter):
            credit = self._credits[check.key]
            if credit.reserved + plan.amount > credit.balance:
                return Blocked(check, credit.balance, credit.reserved)
            return None
        current = self._rates.get(f"{check.key}:{index}", 0)
        previous = self._rates.get(f"{check.key}:{index - 1}", 0)
        used = sliding_usage(current, previous, elapsed)
        want = plan.tokens if check.per_token else 1
        if used + want > check.limit:
            retry = rate_retry_ms(check.limit, want, current, previous, elapsed)
            # Whole requests or tokens, rounded up: the answer's remaining (limit - used) is
            # then less than the call needs, as its refusal says.
            return Blocked(check, math.ceil(used), 0, retry)
        rates.append(RateState(check, int(check.limit - used - want), RATE_WINDOW_MS - elapsed))
        return None

    def _release(self, request_id: str) -> None:
        held = self._held.pop(request_id, None)
        if held is None:
            return
        # A counter rebuilt while this was live never held it: never below 0 (as in Redis).
        for key, amount in held[1]:
            budget = self._budgets.get(key)
            if budget is not None:
                budget.reserved = max(0, budget.reserved - amount)
                continue
            credit = self._credits.get(key)
            if credit is not None:
                credit.reserved = max(0, credit.reserved - amount)

    def _sweep(self, org_id: str, now: int, batch: int = SWEEP_BATCH) -> None:
        heap = self._deadlines.get(org_id)
        reclaimed = 0
        while heap and heap[0][0] <= now and reclaimed < batch:
            deadline, request_id = heapq.heappop(heap)
            held = self._held.get(request_id)
            # A settled request left its heap entry behind; only a live reservation is released.
            if held is not None and held[0] == deadline:
                self._release(request_id)
                reclaimed += 1

    def _tick(self, now: int) -> None:
        self._operations += 1
        if self._operations % PRUNE_EVERY:
            return
        current = now // RATE_WINDOW_MS
        for window in [w for w in self._rates if int(w.rsplit(":", 1)[1]) < current - 1]:
            del self._rates[window]
        for key in [
            k for k, b in self._budgets.items() if b.expire_at_ms and b.expire_at_ms <= now
        ]:
            del self._budgets[key]
        for request_id in [r for r, until in self._settled.items() if until <= now]:
            del self._settled[request_id]
