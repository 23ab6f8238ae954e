"""The counter store in Redis, shared by every worker and replica: one Lua script call to reserve
and one to settle (scripts in guard/lua/). Keys live under the instance prefix and the org's
`{org_id}` hash tag, so one org's counters share a Redis Cluster slot.

The reclaim of expired reservations touches the counters a reservation record names, which the
script reads from the record rather than from KEYS; they are in the same slot by construction.

Redis losing its data (FLUSHALL, a restart without persistence) is survived exactly: this store
remembers the reservations it holds until they are settled, and puts them back when the epoch
marker (epoch.lua) says the data is new (`heartbeat`, and before any rebuild); a counter rebuilt
from the database adds the charges still waiting in the org's usage stream and waits, right
after a loss, until every gateway has had RECOVERY_MS to put its reservations back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sluicegate.core.clock import Clock, SystemClock
from sluicegate.guard import scripts
from sluicegate.guard.counters import (
    MAX_SEED_ROUNDS,
    RATE_WINDOW_MS,
    READ_SWEEP_BATCHES,
    RECOVERY_MS,
    SETTLED_MEMORY_MS,
    SWEEP_BATCH,
    Blocked,
    BudgetCounter,
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
    crossing_label,
    org_of,
)
from sluicegate.metering.stream import (
    DRAIN_GROUP,
    UsageJournal,
    register_stream,
    stream_key,
)

# After this many failures in a row, calls fail at once for BREAKER_SECONDS instead of each
# waiting on a dead server; a single timeout under load does not trip it.
BREAKER_FAILURES = 3
BREAKER_SECONDS = 1.0
# Entries read from a usage stream per round trip while rebuilding a counter.
STREAM_PAGE = 1000

log = logging.getLogger("sluicegate.guard")


class RedisGuardStore:
    backend = "redis"

    def __init__(
        self,
        client: Redis,
        prefix: str,
        clock: Clock | None = None,
        *,
        reservation_ttl_ms: int = 900_000,
        journal: UsageJournal | None = None,
    ) -> None:
        self._client = client
        # The usage events this process appended lately: appended again after a loss.
        self.journal = journal
        self._prefix = f"{prefix}:"
        self._clock = clock or SystemClock()
        self._ttl_ms = reservation_ttl_ms
        self._record_ttl_ms = reservation_ttl_ms + SETTLED_MEMORY_MS
        self._reserve = client.register_script(scripts.script("reserve"))
        self._settle = client.register_script(scripts.script("settle"))
        self._read = client.register_script(scripts.script("read"))
        self._sync_credit = client.register_script(scripts.script("sync_credit"))
        self._extend = client.register_script(scripts.script("extend"))
        self._restore = client.register_script(scripts.script("restore"))
        self._unseed = client.register_script(scripts.script("unseed"))
        self._epoch_script = client.register_script(scripts.script("epoch"))
        self._started = client.register_script(scripts.script("started"))
        self._epoch_key = f"{prefix}:epoch"
        self._epoch: str | None = None  # the epoch token this process saw last
        # Reservations this process holds, by request id, with their deadline (ms): put back if
        # Redis loses them while their requests still run.
        self._live: dict[str, tuple[Reserved, int]] = {}
        self._recovering = asyncio.Lock()
        self._down_until = 0.0
        self._failures = 0

    def _now_ms(self) -> int:
        return int(self._clock.now().timestamp() * 1000)

    def _org_keys(self, org_id: str) -> tuple[str, str]:
        """The org's zset of live reservations and the prefix of its reservation records."""
        zset = f"{self._prefix}{{{org_id}}}:rsv"
        return zset, zset + ":"

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if time.monotonic() < self._down_until:
            raise CounterStoreUnavailable("Redis failed repeatedly; waiting before retrying")
        try:
            answer = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failures += 1
            if self._failures >= BREAKER_FAILURES:
                self._down_until = time.monotonic() + BREAKER_SECONDS
            raise CounterStoreUnavailable(str(exc) or type(exc).__name__) from exc
        self._failures = 0
        return answer

    # --- the contract ------------------------------------------------------------------------

    async def reserve(self, plan: Plan, loader: Loader) -> Reserved | Blocked:
        seeds: dict[int, str] = {}
        spec, fixed, rates = self._prepared(plan)
        zset, records = self._org_keys(plan.org_id)
        for _ in range(MAX_SEED_ROUNDS + 1):
            now = self._now_ms()
            keys = [zset, records + plan.request_id, *self._window_keys(plan, fixed, now)]
            header = (
                f"{now} {now + self._ttl_ms} {plan.amount} {plan.request_id} {records} "
                f"{RATE_WINDOW_MS} {self._record_ttl_ms} {SWEEP_BATCH} {plan.tokens}"
            )
            args = [header, spec]
            if seeds:
                args.append(" ".join(f"{i + 1}={text}" for i, text in seeds.items()))
            answer = await self._call(self._reserve, keys, args)
            status = int(answer[0])
            if status == 1:
                states = tuple(
                    RateState(check, int(answer[1 + 2 * i]), int(answer[2 + 2 * i]))
                    for i, check in enumerate(rates)
                )
                reserved = Reserved(plan, now, states)
                if any(key is not None for key in fixed):
                    self._live[plan.request_id] = (reserved, now + self._ttl_ms)
                return reserved
            if status == 3:
                return Reserved(plan, now, ())
            if status == 0:
                check = plan.checks[int(answer[1]) - 1]
                return Blocked(check, int(answer[2] or 0), int(answer[3] or 0), int(answer[4]))
            positions = [int(i) - 1 for i in answer[1:]]
            missing: list[BudgetCounter | CreditCounter] = [
                plan.checks[i]  # type: ignore[misc]
                for i in positions
            ]
            rebuilt = await self._rebuild(plan.org_id, missing, loader)
            seeds.update(zip(positions, rebuilt, strict=True))
        raise CounterStoreUnavailable("counters vanished while they were being rebuilt")

    def _prepared(self, plan: Plan) -> tuple[str, list[str | None], tuple[RateCounter, ...]]:
        """What never changes for a set of checks, derived once and kept in the plan's memo:
        the spec argument, the keys (None where a rate counter's two window keys go) and the
        rate counters in order."""
        prepared = plan.memo.get("redis")
        if prepared is None:
            parts: list[str] = []
            fixed: list[str | None] = []
            for check in plan.checks:
                if isinstance(check, RateCounter):
                    parts.append(f"r,{check.limit},{1 if check.per_token else 0}")
                    fixed.append(None)
                elif isinstance(check, BudgetCounter):
                    parts.append(f"b,{check.limit},{1 if check.hard else 0},{check.expire_at_ms}")
                    fixed.append(self._prefix + check.key)
                else:
                    parts.append("c")
                    fixed.append(self._prefix + check.key)
            rates = tuple(c for c in plan.checks if isinstance(c, RateCounter))
            budgets = [c for c in plan.checks if isinstance(c, BudgetCounter)]
            charged = [self._prefix + c.key for c in budgets]
            charged.append(self._prefix + plan.credit.key)
            # The settle script's threshold spec: "position,percent,amount,label" per threshold.
            watched = " ".join(
                f"{position},{pct},{amount},{crossing_label(budget)}"
                for position, budget in enumerate(budgets, start=1)
                for pct, amount in budget.threshold_amounts()
            )
            prepared = plan.memo["redis"] = (" ".join(parts), fixed, rates, charged, watched)
        return prepared[0], prepared[1], prepared[2]

    def _window_keys(self, plan: Plan, fixed: list[str | None], now: int) -> list[str]:
        """The checks' keys, with the rate counters' current and previous windows of `now`."""
        window = now // RATE_WINDOW_MS
        cached = plan.memo.get("redis-window")
        if cached is not None and cached[0] == window:
            return cached[1]  # type: ignore[no-any-return]
        keys: list[str] = []
        rates = iter(c for c in plan.checks if isinstance(c, RateCounter))
        for key in fixed:
            if key is None:
                base = self._prefix + next(rates).key
                keys += (f"{base}:{window}", f"{base}:{window - 1}")
            else:
                keys.append(key)
        plan.memo["redis-window"] = (window, keys)
        return keys

    async def settle(
        self,
        reserved: Reserved,
        cost: int,
        tokens: int,
        usage: bytes | None = None,
        *,
        stored: bool = False,
    ) -> tuple[Crossing, ...] | None:
        plan = reserved.plan
        self._prepared(plan)
        charged: list[str] = plan.memo["redis"][3]
        watched: str = plan.memo["redis"][4]
        zset, records = self._org_keys(plan.org_id)
        done = f"{self._prefix}{{{plan.org_id}}}:done:{plan.request_id}"
        keys = [zset, records + plan.request_id, done, *charged]
        delta = tokens - plan.tokens
        if delta:
            window = reserved.at_ms // RATE_WINDOW_MS
            keys += [
                f"{self._prefix}{c.key}:{window}"
                for c in plan.checks
                if isinstance(c, RateCounter) and c.per_token
            ]
        header = f"{plan.request_id} {cost} {len(charged)} {delta} {self._record_ttl_ms}"
        if usage is None:
            logged = "2" if stored else "0"
            answer = await self._call(
                self._settle, keys, [f"{header} {logged} {DRAIN_GROUP}", "", watched]
            )
        else:
            keys.append(stream_key(self._prefix[:-1], plan.org_id))
            answer = await self._call(
                self._settle, keys, [f"{header} 1 {DRAIN_GROUP}", usage, watched]
            )
        self._live.pop(plan.request_id, None)
        status = int(answer[0])
        if status == 0:
            return None
        if usage is not None and self.journal is not None:
            self.journal.note(plan.org_id, usage, " ".join(scripts.text(c) for c in answer[1:]))
        if status == 2:
            # The org's stream was missing and the script made it: the drain must find it. The
            # request is settled and logged already; should this fail, the drain's scan of the
            # prefix finds the stream.
            with contextlib.suppress(RedisError, OSError):
                await register_stream(self._client, self._prefix[:-1], plan.org_id)
        return tuple(Crossing.decode(scripts.text(c)) for c in answer[1:])

    async def mark_started(self, reserved: Reserved, usage: bytes, cost: int) -> bool:
        plan = reserved.plan
        _, records = self._org_keys(plan.org_id)
        settled = f"{self._prefix}{{{plan.org_id}}}:done:{plan.request_id}"
        args = [
            usage,
            cost,
            stream_key(self._prefix[:-1], plan.org_id),
            DRAIN_GROUP,
            self._record_ttl_ms,
            settled,
        ]
        return bool(await self._call(self._started, [records + plan.request_id], args))

    async def extend(self, reserved: Reserved) -> bool:
        plan = reserved.plan
        zset, records = self._org_keys(plan.org_id)
        deadline = self._now_ms() + self._ttl_ms
        args = [plan.request_id, deadline, self._record_ttl_ms]
        held = bool(await self._call(self._extend, [zset, records + plan.request_id], args))
        if plan.request_id in self._live:
            self._live[plan.request_id] = (reserved, deadline)
        return held

    async def read(
        self, counters: Sequence[BudgetCounter | CreditCounter], loader: Loader
    ) -> list[CounterValue]:
        if not counters:
            return []
        org_id = org_of(counters[0])
        zset, records = self._org_keys(org_id)
        seeds: dict[int, str] = {}
        for _ in range(MAX_SEED_ROUNDS + 1):
            keys = [zset]
            args: list[Any] = [self._now_ms(), records, SWEEP_BATCH * READ_SWEEP_BATCHES]
            for index, counter in enumerate(counters):
                keys.append(self._prefix + counter.key)
                if isinstance(counter, BudgetCounter):
                    args += ("b", counter.expire_at_ms, seeds.get(index, ""))
                else:
                    args += ("c", 0, seeds.get(index, ""))
            answer = await self._call(self._read, keys, args)
            if int(answer[0]) == 1:
                return [
                    CounterValue(int(answer[1 + 2 * i] or 0), int(answer[2 + 2 * i] or 0))
                    for i in range(len(counters))
                ]
            positions = [int(i) - 1 for i in answer[1:]]
            missing = [counters[i] for i in positions]
            rebuilt = await self._rebuild(org_id, missing, loader)
            seeds.update(zip(positions, rebuilt, strict=True))
        raise CounterStoreUnavailable("counters vanished while they were being rebuilt")

    # --- rebuilding counters, and surviving Redis's data loss ---------------------------------

    async def _rebuild(
        self, org_id: str, counters: Sequence[BudgetCounter | CreditCounter], loader: Loader
    ) -> list[str]:
        """The seeds of missing counters as the scripts take them. In this order: wait out the
        moments right after a data loss; read how many charges each counter missed so far, then
        the charges pending in the org's usage stream, then (the loader) the database. A charge
        settled after the first read is missed by the seed, which the script then refuses."""
        await self._recovered()
        keys = [self._prefix + counter.key for counter in counters]
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hget(key, "m")
                misses = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc) or type(exc).__name__) from exc
        values = await loader(counters, await self.pending_charges(org_id))
        return [
            scripts.seed_text(value, int(m or 0)) for value, m in zip(values, misses, strict=True)
        ]

    async def pending_charges(self, org_id: str) -> list[PendingCharge]:
        stream = stream_key(self._prefix[:-1], org_id)
        pending: list[PendingCharge] = []
        # An event may be in the stream twice (appended again after a loss): counted once, as
        # the drain stores it once.
        seen: set[tuple[str, datetime]] = set()
        try:
            page: Any = await self._client.xrange(stream, count=STREAM_PAGE)
            while True:
                for _entry_id, fields in page:
                    charge = scripts.pending_charge(fields)
                    if charge is not None and (charge.request_id, charge.created_at) not in seen:
                        seen.add((charge.request_id, charge.created_at))
                        pending.append(charge)
                if len(page) < STREAM_PAGE:
                    return pending
                last = scripts.text(page[-1][0])
                page = await self._client.xrange(stream, min=f"({last}", count=STREAM_PAGE)
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc) or type(exc).__name__) from exc

    async def peek(
        self, counters: Sequence[BudgetCounter | CreditCounter]
    ) -> list[CounterValue | None]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for counter in counters:
                    field = "s" if isinstance(counter, BudgetCounter) else "b"
                    pipe.hmget(self._prefix + counter.key, field, "r")
                answers = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc) or type(exc).__name__) from exc
        return [
            None if used is None else CounterValue(int(used), int(reserved or 0))
            for used, reserved in answers
        ]

    async def unseed(self, counters: Sequence[BudgetCounter | CreditCounter]) -> None:
        by_org: dict[str, list[BudgetCounter | CreditCounter]] = {}
        for counter in counters:
            by_org.setdefault(org_of(counter), []).append(counter)
        for held in by_org.values():
            keys = [self._prefix + counter.key for counter in held]
            kinds = ["b" if isinstance(counter, BudgetCounter) else "c" for counter in held]
            await self._call(self._unseed, keys, [self._record_ttl_ms, *kinds])

    async def _recovered(self) -> None:
        """Return once a counter may be rebuilt: this process has put back its reservations if
        Redis lost its data, and RECOVERY_MS have passed since the loss (so every other gateway
        has too)."""
        token, created, now = await self._read_epoch()
        if token != self._epoch:
            await self._restore_live(token)
        wait_ms = created + RECOVERY_MS - now
        if wait_ms > 0:
            await asyncio.sleep(wait_ms / 1000)

    async def _read_epoch(self) -> tuple[str, int, int]:
        answer = await self._call(self._epoch_script, [self._epoch_key], [secrets.token_hex(8)])
        return scripts.text(answer[0]), int(answer[1]), int(answer[2])

    async def heartbeat(self) -> None:
        token, _created, _now = await self._read_epoch()
        if token != self._epoch:
            await self._restore_live(token)
        now = self._now_ms()
        for request_id in [r for r, (_, deadline) in self._live.items() if deadline < now]:
            # Expired: the store reclaims it by itself; a settle may still come and is harmless.
            del self._live[request_id]

    async def _restore_live(self, token: str) -> None:
        """Put back the reservations this process holds and append again the usage events it
        logged lately (nothing was lost on first sight of the epoch: this process had not seen
        any other), then remember the epoch. Once per epoch: the heartbeat and a rebuild may
        notice the same loss at once."""
        async with self._recovering:
            if token != self._epoch:
                await self._recover(token)

    async def _recover(self, token: str) -> None:
        if self._epoch is not None and self.journal is not None and len(self.journal):
            replayed = await self.journal.replay(self._client, self._prefix[:-1])
            log.warning(
                "Redis lost its data; appended again the usage events of the last moments",
                extra={"events": replayed},
            )
        if self._epoch is not None and self._live:
            restored = 0
            by_org: dict[str, list[tuple[Reserved, int]]] = {}
            for reserved, deadline in self._live.values():
                by_org.setdefault(reserved.plan.org_id, []).append((reserved, deadline))
            for org_id, held in by_org.items():
                restored += await self._restore_org(org_id, held)
            log.warning(
                "Redis lost its data; put back the reservations of requests still running",
                extra={"restored": restored, "held": len(self._live)},
            )
        self._epoch = token

    async def _restore_org(self, org_id: str, held: list[tuple[Reserved, int]]) -> int:
        zset, records = self._org_keys(org_id)
        settled = f"{self._prefix}{{{org_id}}}:done:"
        args = [f"{records} {self._record_ttl_ms} {settled}"]
        for reserved, deadline in held:
            plan = reserved.plan
            counters = " ".join(key for key in self._prepared(plan)[1] if key is not None)
            args.append(f"{plan.request_id} {deadline} {plan.amount} {counters}")
        return int(await self._call(self._restore, [zset], args))

    async def sync_credit(self, counter: CreditCounter, seed: CreditSeed) -> None:
        await self._call(
            self._sync_credit, [self._prefix + counter.key], [seed.total, seed.version]
        )

    async def forget(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            await self._client.delete(*(self._prefix + key for key in keys))
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc) or type(exc).__name__) from exc

    async def close(self) -> None:
        """The Redis client is shared and owned by the runtime, which closes it."""
