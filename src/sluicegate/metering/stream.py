"""The durable usage log in Redis: one stream per org, `<prefix>:{<org_id>}:usage`, under the org's
hash tag so the settle script can append to it atomically with the counters it settles (see
guard/lua/settle.lua). A set, `<prefix>:usage:streams`, names every org stream so the drain
worker finds them.

Redis may lose its data (FLUSHALL, a restart without persistence, an older snapshot), and with it
the set, the streams and their consumer group. So nothing is registered once and for all: every
append (the settle script, or APPEND_SCRIPT below) that finds its stream missing creates it with
the drain's consumer group (reading from the first entry) in the same atomic step, and tells the
caller, who then registers the org again. The drain also scans the prefix for streams now and
then (metering/drain.py), for a registration lost between the two steps.

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

# Append one event (ARGV[2]) to a stream (KEYS[1]) that may have been lost, recreating it with the
# consumer group ARGV[1] when it is missing; 1 when it was (the caller registers it), else 0.
APPEND_SCRIPT = """
local fresh = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  fresh = 1
end
redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
return fresh
"""


def stream_key(prefix: str, org_id: str) -> str:
    return f"{prefix}:{{{org_id}}}:usage"


def registry_key(prefix: str) -> str:
    return f"{prefix}:usage:streams"


def stream_pattern(prefix: str) -> str:
    """A SCAN pattern matching every org stream of the prefix (which has no glob characters)."""
    return f"{prefix}:{{*}}:usage"


def org_of_stream(prefix: str, key: str) -> str | None:
    """The org id in a stream key, None when the key is not an org stream of the prefix."""
    head, tail = f"{prefix}:{{", "}:usage"
    if key.startswith(head) and key.endswith(tail) and len(key) > len(head) + len(tail):
        return key[len(head) : -len(tail)]
    return None


async def register_stream(client: Redis, prefix: str, org_id: str) -> None:
    """Name the org's stream in the registry (again: harmless when it is there)."""
    await client.sadd(registry_key(prefix), org_id)


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
    """The gateway's side: append events that need no counter settlement (the settle script
    appends the others itself), one round trip each; a second only when the stream was missing
    and had to be registered again."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self._append = client.register_script(APPEND_SCRIPT)

    def key(self, org_id: str) -> str:
        return stream_key(self.prefix, org_id)

    async def append(self, org_id: str, payload: bytes) -> None:
        if await self._append(keys=[self.key(org_id)], args=[DRAIN_GROUP, payload]):
            await register_stream(self._client, self.prefix, org_id)
