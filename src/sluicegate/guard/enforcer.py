"""What the proxy calls: reserve before forwarding, settle after. Wraps the counter store with the
rules cache, the rebuild of missing counters from the database, the choice between failing
closed and open when Redis is down, and settlement off the response path (retried while the
store is unreachable, since a settled cost must not be lost)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.clock import Clock
from sluicegate.core.db import reaching_database
from sluicegate.core.logs import log_failure
from sluicegate.guard import repository
from sluicegate.guard.counters import (
    HEARTBEAT_SECONDS,
    Blocked,
    BudgetCounter,
    CounterStoreUnavailable,
    CreditCounter,
    Crossing,
    GuardStore,
    Loader,
    PendingCharge,
    Plan,
    Reserved,
    Seed,
)
from sluicegate.guard.failopen import FailOpen
from sluicegate.guard.memory import MemoryGuardStore
from sluicegate.guard.rules import RulesCache

# Settling against an unreachable store is retried with these pauses (seconds), then the last
# pause repeats until the reservation's deadline has passed (the store reclaims it by then).
SETTLE_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# How often each worker folds committed top-ups into an enforced credit counter on its own.
CREDIT_SYNC_SECONDS = 60.0

log = logging.getLogger("sluicegate.guard")


async def seed_of(
    session: AsyncSession,
    counter: BudgetCounter | CreditCounter,
    pending: Sequence[PendingCharge] = (),
) -> Seed:
    """A counter's value rebuilt from the database and the charges pending in the usage
    stream."""
    if isinstance(counter, CreditCounter):
        return await repository.credit_seed(session, counter.org_id, pending)
    return await repository.spent(session, counter.spend, pending)


def session_loader(session: AsyncSession) -> Loader:
    """A loader that rebuilds counters in `session` (an admin request's own transaction)."""

    async def load(
        counters: Sequence[BudgetCounter | CreditCounter], pending: Sequence[PendingCharge]
    ) -> list[Seed]:
        return [await seed_of(session, counter, pending) for counter in counters]

    return load


async def sync_credit_from_ledger(
    store: GuardStore, session: AsyncSession, counter: CreditCounter
) -> None:
    """Fold the ledger's committed top-ups and adjustments into the credit counter (once each:
    see GuardStore.sync_credit). Raises CounterStoreUnavailable when the store is down."""
    seed = await repository.credit_seed(session, counter.org_id)
    await store.sync_credit(counter, seed)


class CounterLoader:
    """Rebuilds missing counters from the database; concurrent requests missing the same counter
    (having read the same pending charges) share one query."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._loading: dict[tuple[str, int, str], asyncio.Future[Seed]] = {}

    async def __call__(
        self, counters: Sequence[BudgetCounter | CreditCounter], pending: Sequence[PendingCharge]
    ) -> list[Seed]:
        return [await self._one(counter, pending) for counter in counters]

    async def _one(
        self, counter: BudgetCounter | CreditCounter, pending: Sequence[PendingCharge]
    ) -> Seed:
        shared = (counter.key, len(pending), pending[-1].request_id if pending else "")
        loading = self._loading.get(shared)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[Seed] = asyncio.get_running_loop().create_future()
        self._loading[shared] = future
        try:
            async with reaching_database(), self._sessions() as session:
                seed = await seed_of(session, counter, pending)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()
            raise
        finally:
            del self._loading[shared]
        future.set_result(seed)
        return seed


async def _nothing_buffered() -> None:
    return None


class Guard:
    def __init__(
        self,
        store: GuardStore,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        fail_open: bool,
        reservation_ttl_seconds: float,
        events_stored: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`events_stored` returns once every usage event this process has handed to the
        database directly (the buffered writer) so far is stored there."""
        self.store = store
        self._events_stored = events_stored or _nothing_buffered
        self.clock = clock
        self.rules = RulesCache(sessions, clock)
        self.loader = CounterLoader(sessions)
        self._ttl = reservation_ttl_seconds
        # Fail-open: while Redis is down, this process judges alone what it can (guard/failopen).
        self._fallback = (
            FailOpen(clock, int(reservation_ttl_seconds * 1000))
            if fail_open and not isinstance(store, MemoryGuardStore)
            else None
        )
        self._sessions = sessions
        self._credit_synced: dict[str, float] = {}
        self._settling: set[asyncio.Future[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        if self._heartbeat is None:
            self._stopping = False
            self._heartbeat = asyncio.create_task(self._beat(), name="guard-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            # The flag too: a Redis client cancelled mid-call may raise its own error instead of
            # CancelledError, which the loop survives by design.
            self._stopping = True
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None

    async def _beat(self) -> None:
        """Let the store notice a loss of its data and put back what this process holds."""
        while not self._stopping:
            try:
                await self.store.heartbeat()
                if self._fallback is not None and self._fallback.active:
                    await self._fallback.recover(self.store, self._events_stored)
            except CounterStoreUnavailable:
                log.debug("guard heartbeat: the counter store is unavailable")
            except TimeoutError:
                log.debug("guard heartbeat: usage events settled failing open are not stored yet")
            except Exception:
                log.exception("guard heartbeat failed unexpectedly")
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def reserve(self, plan: Plan) -> Reserved | Blocked:
        """Raises CounterStoreUnavailable when the store is down and the gateway fails closed,
        or fails open but the plan guards money (MoneyChecksUnavailable)."""
        if plan.checks and plan.checks[-1] is plan.credit:
            self._keep_credit_in_sync(plan.credit)
        try:
            # Back from an outage, what this process spent failing open reaches the shared
            # counters from the heartbeat (FailOpen.recover): it admitted no hard budget or
            # credit meanwhile, so nothing here has to wait for it.
            return await self.store.reserve(plan, self.loader)
        except CounterStoreUnavailable:
            if self._fallback is None:
                raise
            if not self._fallback.active:
                log.warning("counter store unavailable; judging in this process (fail-open)")
            return await self._fallback.reserve(plan, self.loader)

    def _keep_credit_in_sync(self, counter: CreditCounter) -> None:
        """Top-ups reach the credit counter right after their commit; one that could not (Redis
        was down then) is folded in here, by this worker, within CREDIT_SYNC_SECONDS."""
        now = self.clock.monotonic()
        if (
            now - self._credit_synced.get(counter.org_id, -CREDIT_SYNC_SECONDS)
            < CREDIT_SYNC_SECONDS
        ):
            return
        self._credit_synced[counter.org_id] = now
        self.spawn(self._sync_credit(counter))

    async def _sync_credit(self, counter: CreditCounter) -> None:
        try:
            async with self._sessions() as session:
                await sync_credit_from_ledger(self.store, session, counter)
        except Exception as exc:
            log_failure(log, "could not bring the credit counter up to date", exc)

    def started_soon(self, reserved: Reserved, usage: bytes, cost: int) -> None:
        """Leave what is known of a stream that has started (its usage event so far) beside its
        reservation, billed if this process dies before settling it (GuardStore.mark_started)."""
        if self._fallback is not None and self._fallback.holds(reserved):
            return
        self.spawn(self._started(reserved, usage, cost))

    async def _started(self, reserved: Reserved, usage: bytes, cost: int) -> None:
        try:
            await self.store.mark_started(reserved, usage, cost)
        except CounterStoreUnavailable:
            log.debug("could not mark a stream as started; it is billed when it settles")

    def extend_soon(self, reserved: Reserved) -> None:
        """Keep a long-running request's reservation alive (a stream still relaying)."""
        self.spawn(self._extend(reserved))

    async def _extend(self, reserved: Reserved) -> None:
        if self._fallback is not None and self._fallback.holds(reserved):
            return  # a local reservation lives as long as its process
        try:
            await self.store.extend(reserved)
        except CounterStoreUnavailable:
            log.warning("could not extend a reservation; the next attempt may succeed")

    @property
    def extend_every(self) -> float:
        """How often a running request renews its reservation: well before it would expire."""
        return self._ttl / 3

    async def settle_now(
        self, reserved: Reserved, cost: int, tokens: int, usage: bytes
    ) -> tuple[Crossing, ...] | None:
        """Settle and append the usage event to the store's durable log in one atomic step
        (with the budget thresholds it crossed). None when the event is logged; when the
        reservation was made in this process (fail-open), which keeps no log, the crossings
        (possibly none) for the caller to write with the event itself. Raises
        CounterStoreUnavailable when the store cannot be reached (nothing is known to be done:
        the caller writes the event and settles later, and both are idempotent)."""
        if self._fallback is not None and self._fallback.holds(reserved):
            return await self._fallback.settle(reserved, cost, tokens)
        crossed = await self.store.settle(reserved, cost, tokens, usage)
        return None if self.store.backend == "redis" else (crossed or ())

    async def settle_in_process(
        self, reserved: Reserved, cost: int, tokens: int
    ) -> tuple[Crossing, ...]:
        """Settle against the in-process store (embedded: no I/O, so no reason to defer it) and
        return the thresholds crossed, for the caller to write with the usage event."""
        return await self.store.settle(reserved, cost, tokens) or ()

    def settle_soon(
        self,
        reserved: Reserved,
        cost: int,
        tokens: int,
        stored: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Settle off the response path; a client that went away never cancels it. `stored`
        (the usage event went to the database directly, Redis being unreachable) returns once
        the event is there: only then are the counters told, and not by adding the cost (a
        counter rebuilt from the database meanwhile may hold it already) but by making them
        missing, so they are rebuilt from the database that holds it (GuardStore.settle with no
        event)."""
        self.spawn(self._settle(reserved, cost, tokens, stored))

    async def _settle(
        self,
        reserved: Reserved,
        cost: int,
        tokens: int,
        stored: Callable[[], Awaitable[None]] | None,
    ) -> None:
        if self._fallback is not None and self._fallback.holds(reserved):
            await self._fallback.settle(reserved, cost, tokens)
            return
        request_id = reserved.plan.request_id
        deadline = self.clock.monotonic() + self._ttl
        if stored is not None:
            try:
                async with asyncio.timeout(self._ttl):
                    await stored()
            except TimeoutError:
                log.error(
                    "a request's usage event was not stored before its reservation expired; its "
                    "cost reaches the counters only when they are next rebuilt",
                    extra={"request_id": request_id, "cost_nusd": cost},
                )
                return
        for attempt in itertools.count():
            try:
                await self.store.settle(reserved, cost, tokens, stored=stored is not None)
                return
            except CounterStoreUnavailable as exc:
                if self.clock.monotonic() > deadline:
                    log.error(
                        "could not settle a request before its reservation expired: %s; its cost "
                        "is in its usage event and reaches the counters when they are rebuilt",
                        exc,
                        extra={"request_id": request_id, "cost_nusd": cost},
                    )
                    return
                await asyncio.sleep(SETTLE_BACKOFF[min(attempt, len(SETTLE_BACKOFF) - 1)])

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` off the response path, kept until done so that drain() can wait for it."""
        self.keep(asyncio.create_task(work))

    def keep(self, task: asyncio.Future[None]) -> None:
        """Hold on to a task until it is done, so that drain() waits for it too."""
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def drain(self) -> None:
        """Wait for settlements in flight (shutdown, tests)."""
        while self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)
