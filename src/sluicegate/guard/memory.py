"""In-process counters for the embedded single-process mode."""

from __future__ import annotations

from sluicegate.core.clock import Clock, SystemClock


class MemoryCounterStore:
    backend = "memory"

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        # key -> (value, monotonic deadline or None)
        self._values: dict[str, tuple[int, float | None]] = {}

    def _live(self, key: str) -> tuple[int, float | None] | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        deadline = entry[1]
        if deadline is not None and deadline <= self._clock.monotonic():
            del self._values[key]
            return None
        return entry

    async def increment(
        self, key: str, amount: int = 1, *, ttl_seconds: float | None = None
    ) -> int:
        entry = self._live(key)
        if entry is None:
            deadline = None if ttl_seconds is None else self._clock.monotonic() + ttl_seconds
            entry = (0, deadline)
        value = entry[0] + amount
        self._values[key] = (value, entry[1])
        return value

    async def get(self, key: str) -> int:
        entry = self._live(key)
        return 0 if entry is None else entry[0]

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._values.pop(key, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._values.clear()
