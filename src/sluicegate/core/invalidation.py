"""The invalidation bus: tells every worker to drop cached state (a disabled key, a changed policy).

In-process when embedded; Redis pub/sub across workers and replicas in production. A subscriber
that lost its Redis connection may have missed messages, so after reconnecting it delivers
`ALL_TOPICS` and caches drop everything: stale for a moment is acceptable, stale forever is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

Handler = Callable[[str, str], Awaitable[None]]
ALL_TOPICS = "*"
# The topics of cached auth contexts; each payload is the id of what changed.
KEY_TOPIC = "api_key"
USER_TOPIC = "user"
ORG_TOPIC = "org"
GROUP_TOPIC = "group"  # a group moved or was deleted: contexts of keys in its subtree
GUARD_TOPIC = "guard"  # an org's budgets, policies or guard settings changed; payload: org id
ROUTING_TOPIC = "routing"  # an org's routing overrides changed; payload: org id
# How long a lost subscriber waits before reconnecting; short, because invalidations are urgent.
RECONNECT_DELAY_SECONDS = 0.5
# The listener wakes this often to notice a stop request; reads are client-side waits, not polls
# of the server, so a short interval costs nothing.
LISTEN_POLL_SECONDS = 0.05

log = logging.getLogger("sluicegate.invalidation")


class InvalidationBus(Protocol):
    backend: str

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(topic, payload)` for every message, including this process's own."""
        ...

    def unsubscribe(self, handler: Handler) -> None: ...

    async def publish(self, topic: str, payload: str) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class _Handlers:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: Handler) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    async def dispatch(self, topic: str, payload: str) -> None:
        for handler in self._handlers:
            try:
                await handler(topic, payload)
            except Exception:
                # One broken subscriber must not keep the others from invalidating.
                log.exception("invalidation handler failed", extra={"topic": topic})


class MemoryInvalidationBus(_Handlers):
    backend = "memory"

    async def publish(self, topic: str, payload: str) -> None:
        await self.dispatch(topic, payload)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisInvalidationBus(_Handlers):
    backend = "redis"

    def __init__(self, client: Redis, prefix: str) -> None:
        super().__init__()
        self._client = client
        self.channel = f"{prefix}:invalidations"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscribed = asyncio.Event()

    async def publish(self, topic: str, payload: str) -> None:
        # Our own process drops its cache before the admin call even returns; the others follow
        # through Redis (our own echo arrives too, and invalidating twice is harmless).
        await self.dispatch(topic, payload)
        try:
            await self._client.publish(self.channel, orjson.dumps({"t": topic, "p": payload}))
        except RedisError:
            log.warning("could not publish invalidation; other workers rely on cache TTLs")

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._listen(), name="invalidation-listener")

    async def close(self) -> None:
        """Stop listening. The listener polls a stop flag rather than being cancelled, because
        redis-py's pub/sub read can swallow a cancellation and leave the task hanging."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        done, _ = await asyncio.wait({task}, timeout=LISTEN_POLL_SECONDS * 4)
        if not done:
            task.cancel()
            await asyncio.wait({task}, timeout=LISTEN_POLL_SECONDS * 4)

    async def _listen(self) -> None:
        first = True
        while not self._stopping:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed.set()
                if not first:
                    await self.dispatch(ALL_TOPICS, "")
                first = False
                while not self._stopping:
                    message = await pubsub.get_message(timeout=LISTEN_POLL_SECONDS)
                    if message is None or message.get("type") != "message":
                        continue
                    body = orjson.loads(message["data"])
                    await self.dispatch(str(body["t"]), str(body["p"]))
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                log.warning("invalidation subscriber lost Redis: %s; reconnecting", exc)
                await asyncio.sleep(RECONNECT_DELAY_SECONDS)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
