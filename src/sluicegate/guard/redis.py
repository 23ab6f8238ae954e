"""Counters in Redis, shared by every worker and replica. Keys live under the instance prefix."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sluicegate.guard.counters import CounterStoreUnavailable


class RedisCounterStore:
    backend = "redis"

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}:"

    async def increment(
        self, key: str, amount: int = 1, *, ttl_seconds: float | None = None
    ) -> int:
        name = self._prefix + key
        try:
            if ttl_seconds is None:
                return int(await self._client.incrby(name, amount))
            # One round trip; PEXPIRE NX sets the deadline only when the key has none yet.
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incrby(name, amount)
                pipe.pexpire(name, max(1, int(ttl_seconds * 1000)), nx=True)
                value, _ = await pipe.execute()
            return int(value)
        except RedisError as exc:
            raise CounterStoreUnavailable(str(exc)) from exc

    async def get(self, key: str) -> int:
        try:
            value = await self._client.get(self._prefix + key)
        except RedisError as exc:
            raise CounterStoreUnavailable(str(exc)) from exc
        return 0 if value is None else int(value)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self._client.delete(*(self._prefix + key for key in keys))
        except RedisError as exc:
            raise CounterStoreUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise CounterStoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        """The Redis client is shared and owned by the runtime, which closes it."""
