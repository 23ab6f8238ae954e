"""The durable usage log in Redis: one stream per org, `<prefix>:{<org_id>}:usage`, under the org's
hash tag so the settle script can append to it atomically with the counters it settles (see
guard/lua/settle.lua). A set, `<prefix>:usage:streams`, names every org stream so the drain
worker finds them; a gateway adds its org's stream there before its first append.

An entry is one field, `e`, holding the usage event as JSON (and `x`, the budget thresholds the
request crossed, when it crossed any): times as RFC 3339 with
microseconds, so the drained row has exactly the time the gateway recorded (the usage table's
key includes it). Entries are deleted once drained, so a stream's length is its backlog.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

EVENT_FIELD = b"e"
# Set by the settle script when the request crossed budget thresholds (guard/lua/settle.lua).
CROSSED_FIELD = b"x"
DRAIN_GROUP = "drain"


def stream_key(prefix: str, org_id: str) -> str:
    return f"{prefix}:{{{org_id}}}:usage"


def registry_key(prefix: str) -> str:
    return f"{prefix}:usage:streams"


def dead_letter_key(prefix: str) -> str:
    """Entries that cannot be read as usage events are moved here, never silently dropped."""
    return f"{prefix}:usage:dead"


def encode_event(event: Mapping[str, Any]) -> bytes:
    return orjson.dumps(event)


def decode_event(payload: bytes) -> dict[str, Any]:
    """The event as UsageEvent columns; ValueError (or KeyError) when it is not one."""
    event: dict[str, Any] = orjson.loads(payload)
    if not isinstance(event, dict):
        raise ValueError("a usage entry must be a JSON object")
    created = datetime.fromisoformat(event["created_at"])
    if created.tzinfo is None:
        raise ValueError("a usage entry's created_at must carry its offset")
    event["created_at"] = created
    return event


class UsageStreams:
    """The gateway's side: make sure an org's stream is registered, append events that need no
    counter settlement (the settle script appends the others itself)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self._registry = registry_key(prefix)
        self._registered: set[str] = set()

    def key(self, org_id: str) -> str:
        return stream_key(self.prefix, org_id)

    async def register(self, org_id: str) -> None:
        """Once per org and process: later appends cost no extra round trip."""
        if org_id in self._registered:
            return
        await self._client.sadd(self._registry, org_id)
        self._registered.add(org_id)

    async def append(self, org_id: str, payload: bytes) -> None:
        await self.register(org_id)
        await self._client.xadd(self.key(org_id), {EVENT_FIELD: payload})
