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

An entry is one field, `e`, holding the usage event as JSON with its format's version
(metering/event.py), and `x`, the budget thresholds the request crossed, when it crossed any.
Times are RFC 3339 with microseconds, so the drained row has exactly the time the gateway
recorded (the usage table's key includes it). Entries are deleted once drained, so a stream's
length is its backlog.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from sluicegate.metering.event import (
    USAGE_EVENT_VERSION,
    VERSION_KEY,
    UsageRecord,
    upgraded,
)

EVENT_FIELD = b"e"
# Set by the settle script when the request crossed budget thresholds (guard/lua/settle.lua).
CROSSED_FIELD = b"x"
DRAIN_GROUP = "drain"

# Append one event (ARGV[2], with its crossed thresholds ARGV[3] if any) to a stream (KEYS[1])
# that may have been lost, recreating it with the consumer group ARGV[1] when it is missing; 1
# when it was (the caller registers it), else 0.
APPEND_SCRIPT = """
local fresh = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  fresh = 1
end
if ARGV[3] and ARGV[3] ~= '' then
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[2], 'x', ARGV[3])
else
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[2])
end
return fresh
"""
# Events a gateway appended are kept this long (at most JOURNAL_MAX of them) in its journal, to
# be appended again if Redis loses its data before the drain stored them (see UsageJournal).
JOURNAL_SECONDS = 30.0
JOURNAL_MAX = 100_000
# Events appended again per round trip after a loss.
REPLAY_BATCH = 500


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


# What opens every entry's JSON: its version first (the event's own keys follow).
_VERSION_HEAD = b'{"' + VERSION_KEY.encode() + b'":' + str(USAGE_EVENT_VERSION).encode() + b","


def encode_event(event: UsageRecord) -> bytes:
    # orjson writes a non-empty object as `{"request_id":...}`: the version goes in front of
    # its first key, without building another dict on the hot path.
    return _VERSION_HEAD + orjson.dumps(event)[1:]


def decode_event(payload: bytes) -> UsageRecord:
    """The event of a stream entry, of any version this release reads; ValueError (or
    KeyError) when it is not one."""
    fields: Any = orjson.loads(payload)
    if not isinstance(fields, dict):
        raise ValueError("a usage entry must be a JSON object")
    created = datetime.fromisoformat(fields["created_at"])
    if created.tzinfo is None:
        raise ValueError("a usage entry's created_at must carry its offset")
    fields["created_at"] = created
    return upgraded(fields)


class UsageJournal:
    """The events this process appended in the last JOURNAL_SECONDS. An event sits in its stream
    until the drain stores it (a fraction of a second, normally); if Redis loses its data
    meanwhile (FLUSHALL, a restart without persistence), the process that settled the request
    still has the event here and appends it again once it notices the loss (the guard's epoch
    check). The drain stores by request id, so an event stored already is not counted twice."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: deque[tuple[float, str, bytes, str]] = deque()

    def note(self, org_id: str, payload: bytes, crossed: str = "") -> None:
        now = self._clock()
        entries = self._entries
        entries.append((now, org_id, payload, crossed))
        while entries and (entries[0][0] < now - JOURNAL_SECONDS or len(entries) > JOURNAL_MAX):
            entries.popleft()

    def __len__(self) -> int:
        return len(self._entries)

    async def replay(self, client: Redis, prefix: str) -> int:
        """Append every event kept here again (each stream recreated and registered if it was
        lost); how many."""
        append = client.register_script(APPEND_SCRIPT)
        kept = list(self._entries)
        fresh: set[str] = set()
        for start in range(0, len(kept), REPLAY_BATCH):
            batch = kept[start : start + REPLAY_BATCH]
            async with client.pipeline(transaction=False) as pipe:
                for _, org_id, payload, crossed in batch:
                    key = stream_key(prefix, org_id)
                    await append(keys=[key], args=[DRAIN_GROUP, payload, crossed], client=pipe)
                made = await pipe.execute()
            fresh.update(entry[1] for entry, created in zip(batch, made, strict=True) if created)
        for org_id in sorted(fresh):
            await register_stream(client, prefix, org_id)
        return len(kept)


class UsageStreams:
    """The gateway's side: append events that need no counter settlement (the settle script
    appends the others itself), one round trip each; a second only when the stream was missing
    and had to be registered again."""

    def __init__(self, client: Redis, prefix: str, journal: UsageJournal | None = None) -> None:
        self._client = client
        self.prefix = prefix
        self._append = client.register_script(APPEND_SCRIPT)
        self._journal = journal

    def key(self, org_id: str) -> str:
        return stream_key(self.prefix, org_id)

    async def append(self, org_id: str, payload: bytes) -> None:
        if await self._append(keys=[self.key(org_id)], args=[DRAIN_GROUP, payload]):
            await register_stream(self._client, self.prefix, org_id)
        if self._journal is not None:
            self._journal.note(org_id, payload)
