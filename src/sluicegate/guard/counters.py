"""The counter store interface: integer counters with expiry, shared by every gateway worker.

Two implementations keep one contract (tests/guard/test_counters.py runs against both):
`RedisCounterStore` for production, `MemoryCounterStore` for the embedded single process.
"""

from __future__ import annotations

from typing import Protocol


class CounterStoreUnavailable(Exception):
    """The store cannot be reached; callers decide between failing closed and open."""


class CounterStore(Protocol):
    backend: str

    async def increment(
        self, key: str, amount: int = 1, *, ttl_seconds: float | None = None
    ) -> int:
        """Add `amount` (may be negative) and return the new value.

        A key created by this call expires after `ttl_seconds`; an existing key keeps its expiry,
        so a fixed window stays fixed however often it is touched.
        """
        ...

    async def get(self, key: str) -> int:
        """The current value; 0 for a missing or expired key."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise CounterStoreUnavailable otherwise."""
        ...

    async def close(self) -> None: ...
