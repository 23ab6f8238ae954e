"""Stage 6 of the pipeline (see proxy/__init__.py): settling a call. Tokens from the upstream's
usage (or an estimate, marked), the cost at the price of the deployment that served, the
reservation replaced by that cost, and the usage event recorded durably."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from sluicegate.guard.counters import CounterStoreUnavailable, encode_crossings
from sluicegate.metering.stream import encode_event
from sluicegate.providers.base import Usage
from sluicegate.proxy.requests import ProxyCall
from sluicegate.proxy.state import ProxyState

log = logging.getLogger("sluicegate.proxy")


class Settler:
    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.guard = state.guard

    async def settle(
        self,
        call: ProxyCall,
        *,
        status: int,
        error_type: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        """Settle the call now, unless its settlement was already claimed."""
        if call.claim_settlement():
            await self._settle(call, status=status, error_type=error_type, usage=usage)

    async def _settle(
        self,
        call: ProxyCall,
        *,
        status: int,
        error_type: str | None = None,
        usage: Usage | None = None,
        estimated: bool = False,
        ttft_ms: int | None = None,
    ) -> None:
        """Price the request, settle its reservation and record its usage event. With Redis,
        both happen in ONE atomic script call that also appends the event to the org's durable
        usage stream (no reservation: one XADD), awaited before the client's answer is complete,
        so an answer a client saw is never lost. When Redis cannot be reached the event goes to
        the database through the buffered writer instead, and the counters settle once it is
        stored there (Guard.settle_soon)."""
        if usage is None and status == 200 and call.route is not None:
            usage, estimated = Usage(call.prompt_estimate, 0), True
        tokens = usage or Usage()
        cost = call.cost_of(tokens)
        context = call.context
        reserved, call.reserved = call.reserved, None
        event = call.usage_event(
            tokens, cost, status=status, error_type=error_type, estimated=estimated, ttft_ms=ttft_ms
        )
        used = tokens.prompt_tokens + tokens.completion_tokens
        if call.in_flight is not None:
            ran_on, call.in_flight = call.in_flight, None
            self.state.balancer.finished(ran_on, used, time.perf_counter() - call.started)
        streams = self.state.streams
        if streams is None:
            # No Redis: the counters are in this process, so settling costs no I/O.
            if reserved is not None:
                crossed = await self.guard.settle_in_process(reserved, cost, used)
                if crossed:
                    event["crossed"] = encode_crossings(crossed)
            self.state.writer.record(event)
            return
        try:
            payload = encode_event(event)
            if reserved is None:
                await streams.append(context.org_id, payload)
                return
            unlogged = await self.guard.settle_now(reserved, cost, used, payload)
            if unlogged is None:
                return
            if unlogged:
                event["crossed"] = encode_crossings(unlogged)
            reserved = None  # settled in this process (fail-open); only the event is left
        except (CounterStoreUnavailable, RedisError, OSError):
            log.warning(
                "usage stream unavailable; writing the usage event to the database directly",
                extra={"request_id": call.request_id},
            )
        writer = self.state.writer
        ticket = writer.record(event)
        if reserved is not None:
            self.guard.settle_soon(reserved, cost, used, partial(writer.until_stored, ticket))

    def mark_started(self, call: ProxyCall, ttft_ms: int) -> None:
        """The stream's first bytes are out: should this process die before settling it, what
        is known is billed when its reservation expires: the prompt, which the provider
        processed (the completion so far is known to no one else)."""
        if call.reserved is None:
            return
        prompt = Usage(call.prompt_estimate, 0)
        cost = call.cost_of(prompt)
        event = call.usage_event(
            prompt, cost, status=502, error_type="gateway_lost", estimated=True, ttft_ms=ttft_ms
        )
        self.guard.started_soon(call.reserved, encode_event(event), cost)

    async def settle_shielded(self, call: ProxyCall, **outcome: Any) -> None:
        """Settle and wait for it, but never let a client that leaves meanwhile cancel it."""
        if not call.claim_settlement():
            return
        task = asyncio.ensure_future(self._settle(call, **outcome))
        self.guard.keep(task)
        await asyncio.shield(task)

    def settle_in_background(self, call: ProxyCall, **outcome: Any) -> None:
        """Settle without waiting (the client is gone: nothing to hold back), kept alive by the
        guard until done, so a disconnect still bills what was consumed."""
        if call.claim_settlement():
            self.guard.spawn(self._settle(call, **outcome))
