"""The counter store in Redis, shared by every worker and replica: one Lua script call to reserve
and one to settle (scripts in guard/lua/). Keys live under the instance prefix and the org's
`{org_id}` hash tag, so one org's counters share a Redis Cluster slot.

The reclaim of expired reservations touches the counters a reservation record names, which the
script reads from the record rather than from KEYS; they are in the same slot by construction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sluicegate.core.clock import Clock, SystemClock
from sluicegate.guard.counters import (
    MAX_SEED_ROUNDS,
    RATE_WINDOW_MS,
    READ_SWEEP_BATCHES,
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
    Plan,
    RateCounter,
    RateState,
    Reserved,
    Seed,
    crossing_label,
    org_of,
)
from sluicegate.metering.stream import stream_key

# After this many failures in a row, calls fail at once for BREAKER_SECONDS instead of each
# waiting on a dead server; a single timeout under load does not trip it.
BREAKER_FAILURES = 3
BREAKER_SECONDS = 1.0
# The scripts' version is part of their text (and so of their SHA): a rolling deploy runs old and
# new side by side, each calling its own.
SCRIPT_VERSION = "guard-v2"


def _script(name: str) -> str:
    folder = files("sluicegate.guard") / "lua"
    prelude = (folder / "prelude.lua").read_text()
    return f"-- {SCRIPT_VERSION}\n{prelude}\n{(folder / f'{name}.lua').read_text()}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _seed_text(seed: Seed | None) -> str:
    if seed is None:
        return ""
    if isinstance(seed, CreditSeed):
        return f"{seed.balance},{seed.total},{seed.version}"
    return str(seed)


class RedisGuardStore:
    backend = "redis"

    def __init__(
        self,
        client: Redis,
        prefix: str,
        clock: Clock | None = None,
        *,
        reservation_ttl_ms: int = 900_000,
    ) -> None:
        self._client = client
        self._prefix = f"{prefix}:"
        self._clock = clock or SystemClock()
        self._ttl_ms = reservation_ttl_ms
        self._record_ttl_ms = reservation_ttl_ms + SETTLED_MEMORY_MS
        self._reserve = client.register_script(_script("reserve"))
        self._settle = client.register_script(_script("settle"))
        self._read = client.register_script(_script("read"))
        self._sync_credit = client.register_script(_script("sync_credit"))
        self._extend = client.register_script(_script("extend"))
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
        seeds: dict[int, Seed] = {}
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
                args.append(" ".join(f"{i + 1}={_seed_text(v)}" for i, v in seeds.items()))
            answer = await self._call(self._reserve, keys, args)
            status = int(answer[0])
            if status == 1:
                states = tuple(
                    RateState(check, int(answer[1 + 2 * i]), int(answer[2 + 2 * i]))
                    for i, check in enumerate(rates)
                )
                return Reserved(plan, now, states)
            if status == 3:
                return Reserved(plan, now, ())
            if status == 0:
                check = plan.checks[int(answer[1]) - 1]
                return Blocked(check, int(answer[2] or 0), int(answer[3] or 0), int(answer[4]))
            positions = [int(i) - 1 for i in answer[1:]]
            missing = [plan.checks[i] for i in positions]
            seeds.update(zip(positions, await loader(missing), strict=True))  # type: ignore[arg-type]
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
        self, reserved: Reserved, cost: int, tokens: int, usage: bytes | None = None
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
            answer = await self._call(self._settle, keys, [f"{header} 0", "", watched])
        else:
            keys.append(stream_key(self._prefix[:-1], plan.org_id))
            answer = await self._call(self._settle, keys, [f"{header} 1", usage, watched])
        if int(answer[0]) == 0:
            return None
        return tuple(Crossing.decode(_text(c)) for c in answer[1:])

    async def extend(self, reserved: Reserved) -> bool:
        plan = reserved.plan
        zset, records = self._org_keys(plan.org_id)
        deadline = self._now_ms() + self._ttl_ms
        args = [plan.request_id, deadline, self._record_ttl_ms]
        return bool(await self._call(self._extend, [zset, records + plan.request_id], args))

    async def read(
        self, counters: Sequence[BudgetCounter | CreditCounter], loader: Loader
    ) -> list[CounterValue]:
        if not counters:
            return []
        org_id = org_of(counters[0])
        zset, records = self._org_keys(org_id)
        seeds: dict[int, Seed] = {}
        for _ in range(MAX_SEED_ROUNDS + 1):
            keys = [zset]
            args: list[Any] = [self._now_ms(), records, SWEEP_BATCH * READ_SWEEP_BATCHES]
            for index, counter in enumerate(counters):
                keys.append(self._prefix + counter.key)
                if isinstance(counter, BudgetCounter):
                    args += ("b", counter.expire_at_ms, _seed_text(seeds.get(index)))
                else:
                    args += ("c", 0, _seed_text(seeds.get(index)))
            answer = await self._call(self._read, keys, args)
            if int(answer[0]) == 1:
                return [
                    CounterValue(int(answer[1 + 2 * i] or 0), int(answer[2 + 2 * i] or 0))
                    for i in range(len(counters))
                ]
            positions = [int(i) - 1 for i in answer[1:]]
            missing = [counters[i] for i in positions]
            seeds.update(zip(positions, await loader(missing), strict=True))
        raise CounterStoreUnavailable("counters vanished while they were being rebuilt")

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
