"""The drain worker: moves usage events from the orgs' Redis streams into the database.

Each worker is one consumer of the consumer group `drain` on every org stream. A batch read
from the streams is inserted in one transaction (usage rows idempotently by request, their
rollups and ledger debits: metering/writer.py `store_usage`), and only after that commit are
its entries acknowledged and deleted. So:
- a worker killed before its commit leaves the entries pending; another worker (or itself,
  restarted) claims them once idle for CLAIM_IDLE_MS and stores them;
- a worker killed between commit and acknowledgement has them stored already; whoever claims
  them inserts nothing twice (the usage key conflicts) and so adds nothing twice to the rollups
  or the ledger.
Any number of workers, in `serve` and in `sluicegate worker` processes, may run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.core.logs import log_failure
from sluicegate.core.metrics import USAGE_DRAIN_LAG, USAGE_DRAINED, USAGE_STREAM_BACKLOG
from sluicegate.metering.event import UsageRecord
from sluicegate.metering.partitions import Partitions
from sluicegate.metering.stream import (
    CROSSED_FIELD,
    DRAIN_GROUP,
    EVENT_FIELD,
    dead_letter_key,
    decode_event,
    org_of_stream,
    registry_key,
    stream_key,
    stream_pattern,
)
from sluicegate.metering.writer import AfterInsert, store_usage

# Entries read per stream per round; one transaction stores the round's entries.
BATCH_SIZE = 1000
# An idle worker looks for new entries this often. Reads never block in Redis: a blocked read
# holds a pooled connection and delays a clean stop; an idle poll costs three cheap commands.
POLL_SECONDS = 0.1
# An entry delivered to a consumer and not acknowledged for this long is taken over: its
# consumer is dead or stuck (a healthy batch commits in well under a second).
CLAIM_IDLE_MS = 30_000
# How often the worker looks for newly registered streams and for entries to take over.
RESCAN_SECONDS = 5.0
# How often it also scans the prefix for org streams the registry does not name: a registration
# lost with Redis's data, or between a stream's creation and its registration (a gateway killed
# in between). A SCAN walks every key, so it runs far less often than the rescan.
DISCOVERY_SECONDS = 60.0
# Keys a SCAN call looks at per round trip.
SCAN_COUNT = 1000
# After a failed round (database or Redis down), wait this long before the next.
RETRY_SECONDS = 1.0
# A closing worker waits this long for its round in progress.
STOP_TIMEOUT_SECONDS = 5.0
# Consumers gone quiet this long with nothing pending are removed from the group.
STALE_CONSUMER_MS = 3600 * 1000

log = logging.getLogger("sluicegate.metering")

Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name() -> str:
    """Unique per process start: a restarted worker takes its old entries over by claiming."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class DrainStats:
    stored: int = 0  # rows inserted (new)
    duplicates: int = 0  # entries whose row was stored already (a redelivery)
    dead: int = 0  # entries that were not usage events, moved to the dead-letter stream


class UsageDrain:
    def __init__(
        self,
        client: Redis,
        prefix: str,
        sessions: async_sessionmaker[AsyncSession],
        *,
        after_insert: AfterInsert | None = None,
        consumer: str | None = None,
        claim_idle_ms: int = CLAIM_IDLE_MS,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._sessions = sessions
        self._after_insert = after_insert
        self.consumer = consumer or consumer_name()
        self._claim_idle_ms = claim_idle_ms
        self._partitions = Partitions()
        self._streams: list[str] = []
        self._grouped: set[str] = set()
        self._scanned_at = -RESCAN_SECONDS
        self._discovered_at = -DISCOVERY_SECONDS
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self.stats = DrainStats()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="usage-drain")

    async def close(self) -> None:
        """Finish the round in progress (a batch is never cut between its commit and its
        acknowledgement if it can be helped), then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            # Whatever was not acknowledged stays pending and is taken over later.
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def run(self) -> None:
        """Drain until closed; failures are logged and retried, never fatal."""
        self._stopping = False
        self._stop.clear()
        while not self._stopping:
            try:
                if not await self.drain_round():
                    await self._pause(POLL_SECONDS)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, SQLAlchemyError) as exc:
                log_failure(log, "usage drain round failed; retrying", exc)
                # Redis may have lost streams or groups: look at everything again.
                self._grouped.clear()
                self._scanned_at = -RESCAN_SECONDS
                await self._pause(RETRY_SECONDS)
            except Exception:
                log.exception("usage drain round failed unexpectedly; retrying")
                await self._pause(RETRY_SECONDS)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # --- one round ----------------------------------------------------------------------------

    async def drain_round(self) -> int:
        """Store what is waiting (own pending entries first, then entries taken over from dead
        consumers, then new ones); returns how many entries were handled."""
        if time.monotonic() - self._scanned_at >= RESCAN_SECONDS or await self._new_streams():
            await self._rescan()
        if not self._streams:
            return 0
        # Own pending entries first: delivered to this consumer by an earlier round that failed.
        handled = await self._store(await self._read("0"))
        return handled + await self._store(await self._read(">"))

    async def _read(self, position: str) -> list[tuple[str, list[Entry]]]:
        answer: Any = await self._client.xreadgroup(
            DRAIN_GROUP,
            self.consumer,
            {stream: position for stream in self._streams},
            count=BATCH_SIZE,
        )
        return [
            (name.decode() if isinstance(name, bytes) else name, entries)
            for name, entries in (answer or [])
            if entries
        ]

    async def _store(self, batches: list[tuple[str, list[Entry]]]) -> int:
        events: list[UsageRecord] = []
        done: dict[str, list[bytes]] = {}
        dead: list[tuple[str, Entry]] = []
        for stream, entries in batches:
            for entry_id, fields in entries:
                done.setdefault(stream, []).append(entry_id)
                try:
                    event = decode_event(fields[EVENT_FIELD])
                    if CROSSED_FIELD in fields:
                        event["crossed"] = fields[CROSSED_FIELD].decode()
                    events.append(event)
                except (KeyError, ValueError, TypeError, UnicodeDecodeError):
                    dead.append((stream, (entry_id, fields)))
        if not done:
            return 0
        if events:
            async with self._sessions() as session, session.begin():
                stored = await store_usage(session, events, self._partitions)
            self.stats.stored += stored
            self.stats.duplicates += len(events) - stored
            USAGE_DRAINED.inc(stored)
            if self._after_insert is not None:
                await self._run_after_insert(events)
        async with self._client.pipeline(transaction=False) as pipe:
            for stream, entry in dead:
                moved: dict[Any, Any] = {b"stream": stream, **entry[1]}
                pipe.xadd(dead_letter_key(self._prefix), moved)
            for stream, ids in done.items():
                pipe.xack(stream, DRAIN_GROUP, *ids)
                pipe.xdel(stream, *ids)
            await pipe.execute()
        if dead:
            self.stats.dead += len(dead)
            log.error(
                "usage entries that are not usage events were moved to the dead-letter stream",
                extra={"count": len(dead), "stream": dead_letter_key(self._prefix)},
            )
        return sum(len(ids) for ids in done.values())

    async def _run_after_insert(self, events: list[UsageRecord]) -> None:
        assert self._after_insert is not None
        try:
            async with self._sessions() as session, session.begin():
                await self._after_insert(session, events)
        except (SQLAlchemyError, OSError) as exc:
            log_failure(log, "post-insert step of a usage batch failed", exc)

    # --- streams, groups, dead consumers --------------------------------------------------------

    async def _rescan(self) -> None:
        if time.monotonic() - self._discovered_at >= DISCOVERY_SECONDS:
            await self.discover()
        org_ids = sorted(
            member.decode() if isinstance(member, bytes) else member
            for member in await self._client.smembers(registry_key(self._prefix))
        )
        self._streams = [stream_key(self._prefix, org_id) for org_id in org_ids]
        for stream in self._streams:
            if stream not in self._grouped:
                await self._ensure_group(stream)
        self._scanned_at = time.monotonic()
        await self._take_over()
        await self._observe()

    async def discover(self) -> int:
        """Register every org stream of the prefix the registry lacks; how many it found."""
        registry = registry_key(self._prefix)
        known = {
            member.decode() if isinstance(member, bytes) else member
            for member in await self._client.smembers(registry)
        }
        found: set[str] = set()
        async for key in self._client.scan_iter(
            match=stream_pattern(self._prefix), count=SCAN_COUNT, _type="stream"
        ):
            org_id = org_of_stream(self._prefix, key.decode() if isinstance(key, bytes) else key)
            if org_id is not None and org_id not in known:
                found.add(org_id)
        if found:
            await self._client.sadd(registry, *sorted(found))
            log.warning(
                "found usage streams no registry named (Redis lost data?); draining them",
                extra={"count": len(found)},
            )
        self._discovered_at = time.monotonic()
        return len(found)

    async def _new_streams(self) -> bool:
        """A stream registered since the last scan (a new org's first request): drained at once
        rather than at the next rescan."""
        count = await self._client.scard(registry_key(self._prefix))
        return int(count) != len(self._streams)

    async def _ensure_group(self, stream: str) -> None:
        try:
            # From the very first entry: nothing appended before the group existed is skipped.
            await self._client.xgroup_create(stream, DRAIN_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)

    async def _take_over(self) -> None:
        """Claim entries a dead consumer left pending, and store them now."""
        for stream in self._streams:
            start = "0-0"
            while True:
                answer = await self._client.xautoclaim(
                    stream,
                    DRAIN_GROUP,
                    self.consumer,
                    self._claim_idle_ms,
                    start_id=start,
                    count=BATCH_SIZE,
                )
                start, entries = answer[0], [e for e in answer[1] if e[1]]
                if entries:
                    log.info(
                        "took over usage entries of a stopped consumer",
                        extra={"stream": stream, "count": len(entries)},
                    )
                    await self._store([(stream, entries)])
                if start in (b"0-0", "0-0"):
                    break
            await self._remove_stale_consumers(stream)

    async def _remove_stale_consumers(self, stream: str) -> None:
        for consumer in await self._client.xinfo_consumers(stream, DRAIN_GROUP):
            name = consumer["name"]
            name = name.decode() if isinstance(name, bytes) else name
            if (
                name != self.consumer
                and int(consumer["pending"]) == 0
                and int(consumer["idle"]) > STALE_CONSUMER_MS
            ):
                await self._client.xgroup_delconsumer(stream, DRAIN_GROUP, name)

    async def _observe(self) -> None:
        """Backlog (entries not yet drained, as drained ones are deleted) and the age of the
        oldest, for /metrics."""
        backlog, oldest_ms = 0, None
        now_ms = int(time.time() * 1000)
        for stream in self._streams:
            backlog += int(await self._client.xlen(stream))
            first = await self._client.xrange(stream, count=1)
            if first:
                entry_ms = _entry_time_ms(first[0][0])
                oldest_ms = entry_ms if oldest_ms is None else min(oldest_ms, entry_ms)
        USAGE_STREAM_BACKLOG.set(backlog)
        USAGE_DRAIN_LAG.set(0 if oldest_ms is None else max(0, now_ms - oldest_ms) / 1000)

    async def backlog(self) -> int:
        """Entries in every registered stream not drained yet."""
        await self._rescan()
        total = 0
        for stream in self._streams:
            total += int(await self._client.xlen(stream))
        return total


def _entry_time_ms(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])
