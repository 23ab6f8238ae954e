"""The invalidation bus reaches every subscriber: in-process, and across processes through Redis."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from sluicegate.core.invalidation import ALL_TOPICS, MemoryInvalidationBus, RedisInvalidationBus
from sluicegate.runtime import connect_redis

DELIVERY_TIMEOUT = 2.0


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, topic: str, payload: str) -> None:
        self.messages.append((topic, payload))
        self.arrived.set()

    async def wait_for(self, message: tuple[str, str]) -> None:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while message not in self.messages:
                self.arrived.clear()
                await self.arrived.wait()


async def test_memory_bus_delivers_to_every_handler() -> None:
    bus = MemoryInvalidationBus()
    first, second = Inbox(), Inbox()
    bus.subscribe(first)
    bus.subscribe(second)
    await bus.publish("api_key", "key_1")
    assert first.messages == second.messages == [("api_key", "key_1")]


async def test_a_failing_handler_does_not_starve_the_others() -> None:
    bus = MemoryInvalidationBus()

    async def broken(_topic: str, _payload: str) -> None:
        raise RuntimeError("boom")

    inbox = Inbox()
    bus.subscribe(broken)
    bus.subscribe(inbox)
    await bus.publish("api_key", "key_2")
    assert inbox.messages == [("api_key", "key_2")]


async def test_redis_bus_reaches_another_worker(redis_url: str) -> None:
    prefix = f"sgtest-bus-{uuid.uuid4().hex[:8]}"
    publisher_client, subscriber_client = connect_redis(redis_url, 4), connect_redis(redis_url, 4)
    publisher = RedisInvalidationBus(publisher_client, prefix)
    subscriber = RedisInvalidationBus(subscriber_client, prefix)
    local, remote = Inbox(), Inbox()
    publisher.subscribe(local)
    subscriber.subscribe(remote)
    await subscriber.start()
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await subscriber.subscribed.wait()
        await publisher.publish("api_key", "key_3")
        assert local.messages == [("api_key", "key_3")]  # the publisher's own cache, at once
        await remote.wait_for(("api_key", "key_3"))
    finally:
        await subscriber.close()
        await publisher_client.aclose()
        await subscriber_client.aclose()


async def test_redis_subscriber_that_lost_its_connection_drops_everything(redis_url: str) -> None:
    """Messages sent while a worker was disconnected are lost, so it must flush all caches."""
    prefix = f"sgtest-bus-{uuid.uuid4().hex[:8]}"
    name = f"sgtest-sub-{uuid.uuid4().hex[:8]}"
    client = Redis.from_url(redis_url, client_name=name)
    admin = Redis.from_url(redis_url)
    bus = RedisInvalidationBus(client, prefix)
    inbox = Inbox()
    bus.subscribe(inbox)
    await bus.start()
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await bus.subscribed.wait()
        victims = [c for c in await admin.client_list(_type="pubsub") if c.get("name") == name]
        assert victims, "the subscriber's connection should be listed"
        for victim in victims:
            await admin.client_kill_filter(_id=victim["id"])
        await inbox.wait_for((ALL_TOPICS, ""))
        await admin.publish(bus.channel, b'{"t": "api_key", "p": "key_4"}')
        await inbox.wait_for(("api_key", "key_4"))
    finally:
        await bus.close()
        await client.aclose()
        await admin.aclose()
