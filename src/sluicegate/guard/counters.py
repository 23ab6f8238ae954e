"""The counter store contract: reserve and settle a request against every counter it touches in
one atomic step. Two implementations keep it (tests/guard/test_store_contract.py runs both):
`RedisGuardStore` (one Lua script call per step, shared by every worker and replica) and
`MemoryGuardStore` (the embedded single process).

Counters, all keyed under the org's `{org_id}` hash tag (one Redis Cluster slot per org):
- budget counter: spent (settled nano-USD) and reserved (live reservations) for one budget and
  period instance;
- credit counter: the org's balance, reserved, and the total and count of non-usage ledger
  entries already folded in (so a top-up is applied exactly once, see `sync_credit`);
- rate counter: requests or tokens per fixed minute window; a sliding minute is the current
  window plus the previous one weighted by how much of it still overlaps.

A budget or credit counter that does not exist (a new period, Redis restarted empty, FLUSHALL) is
never guessed: the store asks its `Loader` for the value rebuilt from the database (usage rows,
ledger) and from the charges settled but not yet stored there (`PendingCharge`, the usage events
waiting in the org's stream), and seeds it, then checks. A charge settled while the rebuild ran
makes the store rebuild again, so the seed never misses one (guard/lua/prelude.lua `seed`). A
reservation holds until settled or until its deadline; the next reserve or read of that org
reclaims expired reservations, so a crashed request frees its budget by itself. Settle is
idempotent per request id.

When Redis loses its data, the reservations of requests still running are lost with it: each
gateway notices (`GuardStore.heartbeat`) and puts back those it holds, and a rebuild waits until
every gateway has had the time to, so a budget rebuilt after the loss still counts them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# Rate limits are per minute (rpm, tpm).
RATE_WINDOW_MS = 60_000
# Expired reservations reclaimed per reserve, so one call's work stays bounded; a read (admin,
# rare) reclaims up to READ_SWEEP_BATCHES times as many.
SWEEP_BATCH = 64
READ_SWEEP_BATCHES = 16
# Counters rebuilt, then missing again before use (forgotten meanwhile, or charged while being
# rebuilt), this many times: the store gives up with CounterStoreUnavailable rather than loop.
MAX_SEED_ROUNDS = 5
# A settled request id is remembered this long beyond its reservation, so a retried settle
# arriving late still finds it.
SETTLED_MEMORY_MS = 24 * 3600 * 1000
# Each gateway process looks this often whether the store lost its data (GuardStore.heartbeat),
# and a counter rebuilt within RECOVERY_MS of a loss waits until that much has passed: by then
# every live gateway has put back the reservations it holds (its heartbeat ran several times).
HEARTBEAT_SECONDS = 0.5
RECOVERY_MS = 2_000


class CounterStoreUnavailable(Exception):
    """The store cannot be reached; callers decide between failing closed and open."""


@dataclass(frozen=True, slots=True)
class SpendScope:
    """Whose settled spend a budget counter holds, for rebuilding it from usage rows.

    `kind` is org, group (the group's whole subtree), member (the key owner's spend) or key;
    `start`/`end` bound the period (both None for a total budget)."""

    org_id: str
    kind: str
    id: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class BudgetCounter:
    key: str  # "{org_id}:b:<budget id>:<subject>:<period start ms>"
    budget_id: str
    limit: int  # nano-USD
    hard: bool  # soft budgets are counted but never block
    expire_at_ms: int  # when the store may forget the counter; 0: never (total budgets)
    spend: SpendScope
    # Percentages of the limit whose crossing settle reports (alerts), ascending.
    thresholds: tuple[int, ...] = ()

    @property
    def period_start_ms(self) -> int:
        """The start of this counter's period (0 for a total budget): the last part of its key."""
        return int(self.key.rpartition(":")[2])

    @property
    def subject(self) -> str:
        """The member a default member budget counts for, "-" otherwise."""
        return self.key.rsplit(":", 2)[1]

    def threshold_amounts(self) -> list[tuple[int, int]]:
        """(percent, nano-USD) pairs: spend reaching the amount has reached the percentage."""
        if self.limit <= 0:
            return []
        return [(pct, -(-self.limit * pct // 100)) for pct in self.thresholds]


@dataclass(frozen=True, slots=True)
class CreditCounter:
    key: str  # "{org_id}:credit"
    org_id: str


@dataclass(frozen=True, slots=True)
class RateCounter:
    key: str  # "{org_id}:rl:<scope kind>:<scope id>:<rpm|tpm>"; the window index is appended
    limit: int
    per_token: bool  # tpm when true, rpm otherwise
    scope_kind: str
    scope_id: str


Check = BudgetCounter | CreditCounter | RateCounter


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget threshold that one settlement took the spend across (from below the amount to
    at or above it). Settle is atomic, so exactly one request crosses each threshold of a
    counter; `spent` is the counter's spend right after it."""

    budget_id: str
    subject: str  # "-", or the member of a default member budget
    period_start_ms: int
    percent: int
    spent: int

    def encode(self) -> str:
        return f"{self.budget_id}/{self.subject}/{self.period_start_ms}/{self.percent}/{self.spent}"

    @classmethod
    def decode(cls, text: str) -> Crossing:
        budget_id, subject, start, percent, spent = text.split("/")
        return cls(budget_id, subject, int(start), int(percent), int(spent))


def crossing_label(counter: BudgetCounter) -> str:
    """The first three parts of the counter's crossings' encoding (the script appends the
    percentage and the spend)."""
    return f"{counter.budget_id}/{counter.subject}/{counter.period_start_ms}"


def encode_crossings(crossings: Sequence[Crossing]) -> str:
    """As the usage event's `crossed` field (the same text the settle script writes)."""
    return " ".join(crossing.encode() for crossing in crossings)


def decode_crossings(text: str | None) -> list[Crossing]:
    return [Crossing.decode(part) for part in (text or "").split()]


def crossings_of(counter: BudgetCounter, before: int, after: int) -> list[Crossing]:
    """The thresholds of `counter` that spend going from `before` to `after` crossed."""
    return [
        Crossing(counter.budget_id, counter.subject, counter.period_start_ms, pct, after)
        for pct, amount in counter.threshold_amounts()
        if before < amount <= after
    ]


@dataclass(frozen=True, slots=True)
class CreditSeed:
    """A credit counter rebuilt from the ledger: balance = sum of all entries; `total` and
    `version` are the sum and count of the non-usage entries (top-ups, adjustments, refunds).
    The count works as a version because those entries are only ever appended, never changed
    or deleted; a correction is a new adjustment."""

    balance: int
    total: int
    version: int


Seed = int | CreditSeed


@dataclass(frozen=True, slots=True)
class PendingCharge:
    """A settled request whose usage event may not be in the database yet (it waits in the org's
    usage stream): what a counter rebuilt from the database must add unless it is stored."""

    request_id: str
    created_at: datetime
    cost: int
    key_id: str
    user_id: str
    group_id: str


# Rebuilds missing budget and credit counters, in the order given, from the database and the
# pending charges (those the database does not hold yet are added).
Loader = Callable[
    [Sequence[BudgetCounter | CreditCounter], Sequence[PendingCharge]], Awaitable[list[Seed]]
]


@dataclass(slots=True)
class Plan:
    """What one request asks of the counters: `amount` nano-USD on every budget counter and the
    credit, `tokens` on every tpm counter, one on every rpm counter. `checks` are in the order
    they are judged (narrowest scope first), so the first that fails is the one named."""

    org_id: str
    request_id: str
    amount: int
    tokens: int
    checks: tuple[Check, ...]
    # Settle charges the actual cost to the credit even when credit is not enforced.
    credit: CreditCounter
    # Shared by every plan built from the same cached `checks`: a store keeps what it derives
    # from them here (its encoding of keys and limits), so the hot path does not redo it.
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def guards_money(self) -> bool:
        """A hard budget or the credit to check: limits on money every gateway process spends
        from at once, which one process alone cannot judge (see guard/failopen.py)."""
        return any(
            isinstance(check, CreditCounter) or (isinstance(check, BudgetCounter) and check.hard)
            for check in self.checks
        )


@dataclass(frozen=True, slots=True)
class RateState:
    counter: RateCounter
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Reserved:
    plan: Plan
    at_ms: int  # when it was reserved: settle adjusts the tpm windows of that moment
    rates: tuple[RateState, ...]


@dataclass(frozen=True, slots=True)
class Blocked:
    """The first check that failed. Budget: used = spent; credit: used = balance; rate: used =
    requests or tokens in the sliding minute and `retry_after_ms` (-1: the request alone is
    larger than the limit)."""

    check: Check
    used: int
    reserved: int
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class CounterValue:
    """Budget: used = spent; credit: used = balance."""

    used: int
    reserved: int


class GuardStore(Protocol):
    backend: str

    async def reserve(self, plan: Plan, loader: Loader) -> Reserved | Blocked:
        """All checks pass and all are reserved, or nothing is and the first failure is named."""
        ...

    async def settle(
        self,
        reserved: Reserved,
        cost: int,
        tokens: int,
        usage: bytes | None = None,
        *,
        stored: bool = False,
    ) -> tuple[Crossing, ...] | None:
        """Release the reservation and charge the actual cost (and tokens) instead; None when
        this request was settled already (nothing changes), else the budget thresholds this
        charge crossed (usually none). `usage`, the encoded usage event, is appended to the
        org's durable usage log in the same atomic step by a store that keeps one (Redis),
        together with the crossings; a store that keeps none ignores it and the caller writes
        the event (with the crossings returned). `stored`: the event is in the database already
        (written there while this store could not be reached); a store that rebuilds its
        counters from the database then makes the charged counters missing instead of charging
        them (a rebuild since may hold the charge or not), and reports no crossing."""
        ...

    async def mark_started(self, reserved: Reserved, usage: bytes, cost: int) -> bool:
        """The request's upstream answered (a stream's first bytes went out): should its gateway
        die before settling it, `usage` (costing `cost`) is billed when the reservation expires
        (a store whose reservations die with the gateway keeps nothing). False when the
        reservation is no longer held."""
        ...

    async def extend(self, reserved: Reserved) -> bool:
        """Push the reservation's deadline one TTL past now (a request still running, such as a
        long stream); False when it is no longer held."""
        ...

    async def read(
        self, counters: Sequence[BudgetCounter | CreditCounter], loader: Loader
    ) -> list[CounterValue]:
        """Current values (after reclaiming expired reservations), rebuilding missing ones."""
        ...

    async def sync_credit(self, counter: CreditCounter, seed: CreditSeed) -> None:
        """Fold committed top-ups and adjustments into the credit counter, exactly once: applied
        only when `seed.version` is newer than what the counter has seen. A missing counter is
        left missing (it is rebuilt from the ledger when next needed)."""
        ...

    async def forget(self, keys: Sequence[str]) -> None:
        """Drop counters (a deleted budget); they are rebuilt if needed again."""
        ...

    async def peek(
        self, counters: Sequence[BudgetCounter | CreditCounter]
    ) -> list[CounterValue | None]:
        """Current values as they are, None for a counter that is missing: nothing is rebuilt
        (reconcile reads what enforcement uses, and changes nothing)."""
        ...

    async def pending_charges(self, org_id: str) -> list[PendingCharge]:
        """The org's charges settled but maybe not yet in the database (its usage stream)."""
        ...

    async def unseed(self, counters: Sequence[BudgetCounter | CreditCounter]) -> None:
        """Make counters missing, keeping the reservations they hold: rebuilt from the database
        when next used, and a rebuild under way starts again (reconcile --repair; charges that
        reached the database while the store could not be reached, see FailOpen)."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise CounterStoreUnavailable otherwise."""
        ...

    async def heartbeat(self) -> None:
        """Called every HEARTBEAT_SECONDS by each gateway process: notice that the store lost
        its data and put back the reservations this process holds (a store that cannot lose
        them does nothing). Raises CounterStoreUnavailable when the store is down."""
        ...

    async def close(self) -> None: ...


def credit_counter(org_id: str) -> CreditCounter:
    """The org's credit counter: one key for the proxy, the credits API and the org settings."""
    return CreditCounter(f"{{{org_id}}}:credit", org_id)


def org_of(counter: BudgetCounter | CreditCounter) -> str:
    return counter.org_id if isinstance(counter, CreditCounter) else counter.spend.org_id


def rate_window(now_ms: int) -> tuple[int, int]:
    """(window index, ms elapsed in it) of a fixed one-minute window."""
    return divmod(now_ms, RATE_WINDOW_MS)


def sliding_usage(current: int, previous: int, elapsed_ms: int) -> float:
    """Requests or tokens in the sliding minute ending now."""
    return previous * (RATE_WINDOW_MS - elapsed_ms) / RATE_WINDOW_MS + current


def rate_retry_ms(limit: int, want: int, current: int, previous: int, elapsed_ms: int) -> int:
    """How long until `want` more would fit, if nothing else arrives; -1 when never."""
    window = RATE_WINDOW_MS
    if want > limit:
        return -1
    if current + want <= limit:
        # Within this window: wait until the previous window's weight has fallen enough.
        if previous <= 0:
            return 0
        wait = (window - elapsed_ms) - (limit - current - want) * window / previous
        return max(0, int(wait) + 1)
    # Next window: this window's count becomes the weighted previous one.
    later = window - (limit - want) * window / current
    return (window - elapsed_ms) + max(0, int(later) + 1)
