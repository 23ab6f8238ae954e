"""The attempts of one call: its candidates (routing/plan.py) tried in order until one answers.

A 429, a 5xx, a connect error, a timeout, or an upstream refusal only the operator can fix (401,
403, 404) moves on to the next candidate, after a backoff with full jitter; each counts against
the deployment's health (routing/health.py). A refusal that is the client's to fix (400, 413,
422) ends the call, except a context-window error, which moves on to the model's
context-window fallbacks when it has them. At most `routing_max_attempts` attempts are made and
none starts after `routing_retry_deadline_seconds`; then the last failure is the answer. A
stream moves on only before its first byte reached the client: once relayed, it is committed.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping

from sluicegate.core.metrics import ROUTING_ATTEMPTS, ROUTING_FALLBACKS, ROUTING_RETRIES
from sluicegate.providers.base import UpstreamCall
from sluicegate.providers.deployment import ModelRoute
from sluicegate.providers.transport import UpstreamTimeout
from sluicegate.proxy import upstream_errors
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.requests import ProxyCall
from sluicegate.routing.balance import Balancer
from sluicegate.routing.health import HealthBoard, retry_after_seconds

# Who answered: the model id that served (a fallback's, when one did), its provider, and how many
# upstream attempts the answer took (on failures too).
MODEL_HEADER = "x-sluicegate-model"
PROVIDER_HEADER = "x-sluicegate-provider"
ATTEMPTS_HEADER = "x-sluicegate-attempts"
# Upstream answers that another deployment may well not give.
RETRYABLE_STATUSES = frozenset({401, 403, 404, 408, 409, 429})
CONTEXT_WINDOW_CODE = "context_length_exceeded"
# The backoff's exponent stops growing here (base * 2**5).
MAX_BACKOFF_DOUBLINGS = 5


class Attempts:
    __slots__ = (
        "_backoff",
        "_balancer",
        "_began",
        "_call",
        "_deadline",
        "_health",
        "_last",
        "_max",
        "_queue",
    )

    def __init__(
        self,
        call: ProxyCall,
        health: HealthBoard,
        balancer: Balancer,
        *,
        max_attempts: int,
        deadline_seconds: float,
        backoff_ms: int,
    ) -> None:
        self._call = call
        self._health = health
        self._balancer = balancer
        self._queue = list(call.candidates)
        self._max = max_attempts
        self._deadline = call.started + deadline_seconds
        self._backoff = backoff_ms / 1000
        self._last: ProxyError | None = None
        self._began = 0.0  # when the current attempt was sent

    async def next(
        self, prepare: Callable[[ModelRoute], UpstreamCall]
    ) -> tuple[ModelRoute, UpstreamCall]:
        """The next deployment to try and its upstream call; raises the last failure when no
        attempt is left. A deployment whose provider cannot express the request (`prepare`
        refuses it) is passed over without an attempt: no parameter is ever dropped."""
        call = self._call
        while self._queue and call.attempts < self._max:
            if call.attempts and time.perf_counter() >= self._deadline:
                break
            route = self._queue.pop(0)
            if not await self._may_try(route):
                continue
            try:
                upstream = prepare(route)
            except ProxyError as exc:
                self._last = exc
                continue
            if call.attempts:
                await self._pause()
                ROUTING_RETRIES.labels(route.provider.name, route.deployment).inc()
            call.attempts += 1
            call.route = route
            call.in_flight = route
            self._balancer.started(route, self._health.now_ms() if route.rpm or route.tpm else 0)
            self._began = time.perf_counter()
            return route, upstream
        last = self._last
        assert last is not None, "a call with candidates ends with a failure to report"
        if call.attempts:
            last.headers[ATTEMPTS_HEADER] = str(call.attempts)
            if call.route is not None:
                last.headers[PROVIDER_HEADER] = call.route.provider.name
        raise last

    async def _may_try(self, route: ModelRoute) -> bool:
        """A deployment on probation is tried by the one request that claims its probe; the
        others route around it (unless nothing else is left to try)."""
        health = self._health
        if health.all_healthy or not health.on_probation(route.deployment):
            return True
        if not self._queue and self._call.attempts == 0:
            return True  # the only way left: never closed by a cooldown
        return await health.claim_probe(route.deployment, health.now_ms())

    async def _pause(self) -> None:
        if self._backoff <= 0:
            return
        doublings = min(self._call.attempts - 1, MAX_BACKOFF_DOUBLINGS)
        await asyncio.sleep(self._backoff * (2**doublings) * random.random())  # noqa: S311

    def answered(self, route: ModelRoute) -> None:
        """The upstream accepted the call (2xx headers; a stream's first bytes follow at once):
        the time this attempt took to get there counts for `lowest_latency`."""
        self._balancer.answered(route, (time.perf_counter() - self._began) * 1000)
        ROUTING_ATTEMPTS.labels(route.provider.name, route.deployment, "ok").inc()
        requested = self._call.requested_model
        if route.id != requested:
            ROUTING_FALLBACKS.labels(requested, route.id).inc()

    async def succeeded(self, route: ModelRoute) -> None:
        await self._health.succeeded(route.deployment)

    async def unanswered(self, route: ModelRoute, exc: Exception) -> None:
        """The attempt got no answer: it timed out, or its connection failed."""
        if isinstance(exc, TimeoutError | UpstreamTimeout):
            await self.failed(route, upstream_errors.timed_out(route), "timeout")
        else:
            await self.failed(route, upstream_errors.unreachable(route, exc), "connect")

    async def failed(
        self, route: ModelRoute, error: ProxyError, kind: str, retry_after: str | None = None
    ) -> None:
        """The attempt failed in a way another deployment may not: count it, and go on."""
        ROUTING_ATTEMPTS.labels(route.provider.name, route.deployment, kind).inc()
        self._finished(route)
        self._last = error
        await self._health.failed(route.deployment, retry_after_seconds(retry_after))

    async def refused(
        self,
        route: ModelRoute,
        status: int,
        error: ProxyError,
        headers: Mapping[str, str],
        context_fallbacks: list[ModelRoute],
    ) -> None:
        """The upstream answered `status` >= 400: go on when another deployment may answer,
        else raise `error` (the client's request is at fault)."""
        if status >= 500 or status in RETRYABLE_STATUSES:
            await self.failed(route, error, str(status), headers.get("retry-after"))
            return
        ROUTING_ATTEMPTS.labels(route.provider.name, route.deployment, str(status)).inc()
        self._finished(route)
        if context_fallbacks and error.body.get("code") == CONTEXT_WINDOW_CODE:
            # Only models with a larger window are worth it; the request stays as it was.
            self._queue = [r for r in context_fallbacks if r.context_window > route.context_window]
            self._last = error
            if self._queue:
                return
        error.headers[ATTEMPTS_HEADER] = str(self._call.attempts)
        error.headers[PROVIDER_HEADER] = route.provider.name
        raise error

    def _finished(self, route: ModelRoute) -> None:
        if self._call.in_flight is route:
            self._call.in_flight = None
            self._balancer.finished(route, 0, 0.0)
