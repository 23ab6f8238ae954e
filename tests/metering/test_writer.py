"""The buffered writer's tickets: whoever handed it an event can wait until that event is in the
database (the guard tells the counters only then, see Guard.settle_soon)."""

from __future__ import annotations

import asyncio

from sluicegate.metering.writer import UsageWriter
from sluicegate.runtime import Runtime
from tests.credits.test_ledger import usage_cost, usage_event
from tests.factories import make_tenant


async def test_until_stored_returns_once_the_event_is_in_the_database(runtime: Runtime) -> None:
    org_id = (await make_tenant(runtime)).org_id
    writer = UsageWriter(runtime.sessions)
    now = runtime.clock.now()
    first = writer.record(usage_event(org_id, now, 3))
    second = writer.record(usage_event(org_id, now, 4))
    assert second == first + 1
    waiting = asyncio.ensure_future(writer.until_stored(second))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await usage_cost(runtime, org_id) == 0
    await writer.start()  # flushes in the background
    await asyncio.wait_for(waiting, 30)
    assert await usage_cost(runtime, org_id) == 7
    await asyncio.wait_for(writer.caught_up(), 30)  # nothing left: returns at once
    await writer.close()
