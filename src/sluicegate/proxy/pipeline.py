"""The request pipeline: authenticate -> parse -> policy -> reserve -> forward -> settle (see
__init__)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sluicegate.core.errors import DatabaseUnavailable
from sluicegate.guard.counters import (
    Blocked,
    CounterStoreUnavailable,
    Reserved,
)
from sluicegate.guard.policy import NO_POLICY, EffectivePolicy, client_address
from sluicegate.guard.rules import KeyRules, OrgRules
from sluicegate.keys.lookup import AuthContext
from sluicegate.providers import estimate
from sluicegate.providers.base import (
    Endpoint,
    InvalidUpstreamResponse,
    StreamReader,
    UnsupportedRequest,
    UpstreamCall,
    Usage,
)
from sluicegate.providers.config import ModelRoute
from sluicegate.providers.transport import UpstreamError, UpstreamResponse
from sluicegate.proxy import guardrails, refusals, upstream_errors
from sluicegate.proxy.attempts import ATTEMPTS_HEADER, MODEL_HEADER, PROVIDER_HEADER, Attempts
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.guardrails import rate_headers
from sluicegate.proxy.requests import ProxyCall, read_body, validate_body
from sluicegate.proxy.route import key_allows, refusal_of
from sluicegate.proxy.settle import Settler
from sluicegate.proxy.settlement import CLIENT_GONE, CLIENT_GONE_STATUS, Settlement
from sluicegate.proxy.state import ProxyState
from sluicegate.proxy.streaming import RelayResponse
from sluicegate.routing.overrides import NO_OVERRIDE, EffectiveRouting
from sluicegate.routing.plan import NoRoute, within_ceiling, worst_case

_JSON = "application/json"
# A call sent with a smaller max_tokens than the model's limit, to fit the budget or credit left
# (it asked for none): this header says how many it got. At most this many attempts (each
# blocking budget or credit can lower it once more).
CLAMPED_HEADER = "x-sluicegate-max-tokens-clamped"
CLAMP_ATTEMPTS = 4
log = logging.getLogger("sluicegate.proxy")


class Pipeline:
    def __init__(self, state: ProxyState) -> None:
        self.state = state
        self.settings = state.settings
        self.clock = state.runtime.clock
        self.guard = state.guard
        self.planner = state.planner
        settler = Settler(state)
        self.settle = settler.settle
        self.settle_shielded = settler.settle_shielded
        self.settle_in_background = settler.settle_in_background
        self.mark_started = settler.mark_started
        self.trusted_proxies = state.settings.trusted_proxy_networks

    # --- 1. authenticate ----------------------------------------------------------------------

    async def authenticate(self, request: Request) -> AuthContext:
        secret = _presented_key(request)
        if secret is None:
            raise refusals.KEY_MISSING.error()
        try:
            context = await self.state.resolver.resolve(secret)
        except DatabaseUnavailable:
            raise refusals.DATABASE_UNAVAILABLE.error() from None
        if context is None or context.org_deleted:
            raise refusals.KEY_INVALID.error()
        if context.key_status == "revoked":
            raise refusals.KEY_INACTIVE.error(status="revoked")
        # The owner before the key's own status: removing a member also disables their keys,
        # and the caller should learn why (403 owner_removed), not just that it is disabled.
        if context.owner_status != "active":
            raise refusals.OWNER_FROZEN.error()
        if not context.owner_is_member:
            raise refusals.OWNER_REMOVED.error()
        if context.key_status != "active":
            raise refusals.KEY_INACTIVE.error(status=context.key_status)
        expires = context.key_expires_at
        if expires is not None and expires <= self.clock.now():
            raise refusals.KEY_EXPIRED.error()
        return context

    # --- the whole request --------------------------------------------------------------------

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        context = await self.authenticate(request)
        call = ProxyCall(request, context, endpoint, started, self.clock.now())
        # From here on the call is settled exactly once, however it ends (proxy/settlement.py).
        async with Settlement(call, self.settle, self.settle_in_background) as settlement:
            body = validate_body(endpoint, await read_body(request, self.settings.max_body_bytes))
            call.requested_model = body["model"]
            routing = await self.routing_for(context)
            self.planner.plan(call, body, routing)
            call.stream = body.get("stream") is True
            options = body.get("stream_options")
            call.include_usage = isinstance(options, dict) and options.get("include_usage") is True
            call.prompt_estimate = _prompt_estimate(endpoint, body)
            await self.reserve(request, call, body, routing)
            if call.stream:
                settlement.hand_over(await self.forward_stream(call, body))
            else:
                settlement.answer = await self.forward(call, body)
        assert settlement.answer is not None
        return settlement.answer

    # --- 3. policy ----------------------------------------------------------------------------

    async def routing_for(self, context: AuthContext) -> EffectiveRouting:
        """The routing override in force for the key's group (nearest group wins per field)."""
        overrides = self.state.overrides
        if overrides is None:
            return NO_OVERRIDE
        try:
            return (await overrides.get(context.org_id)).for_chain(context.group_chain)
        except DatabaseUnavailable:
            raise refusals.DATABASE_UNAVAILABLE.error() from None

    async def rules_for(self, context: AuthContext) -> tuple[OrgRules, KeyRules] | None:
        """The org's guardrail rules (cached per worker) and what they make of this key."""
        try:
            rules = await self.guard.rules.get(context.org_id)
        except DatabaseUnavailable:
            raise refusals.DATABASE_UNAVAILABLE.error() from None
        if rules is None:
            return None
        return rules, rules.for_key(context.key_id, context.owner_user_id, context.group_chain)

    # --- 4. reserve ---------------------------------------------------------------------------

    async def reserve(
        self, request: Request, call: ProxyCall, body: dict[str, Any], routing: EffectiveRouting
    ) -> None:
        """Policies along the key's chain, the group's cost ceiling, then one atomic reservation
        over every budget, rate limit and the credit (402 / 429 / 403 / 503), sized for the
        dearest deployment the call may reach. Keys without any guardrail skip it."""
        found = await self.rules_for(call.context)
        policy = found[1].policy if found is not None else NO_POLICY
        if not policy.empty:
            address = None
            if policy.ip_rules:
                peer = request.client.host if request.client else None
                forwarded = request.headers.get("x-forwarded-for")
                address = client_address(peer, forwarded, self.trusted_proxies)
            guardrails.check_policy(policy, call.requested_model, address)
            if len(call.candidates) > 1 or call.context_candidates:
                # A fallback never reaches a model a policy on the key's chain denies (the model
                # asked for was just allowed).
                call.candidates = [r for r in call.candidates if policy.allows_models(r.id)]
                call.context_candidates = [
                    r for r in call.context_candidates if policy.allows_models(r.id)
                ]
        asked = guardrails.asked_for_output(body)
        if not routing.empty:
            try:
                call.candidates = within_ceiling(
                    call.candidates, lambda r: self.worst_cost(call, body, r, policy), routing
                )
            except NoRoute as exc:
                raise refusal_of(exc) from None
            call.route = call.candidates[0]
        route = worst_case(call.candidates + call.context_candidates)
        output = guardrails.output_tokens(call.endpoint, body, route, policy)
        if found is None or found[1].empty:
            return
        rules, key_rules = found
        result, amount, tokens = await self.reserve_output(call, key_rules, route, output)
        if isinstance(result, Blocked) and not asked and call.endpoint is not Endpoint.EMBEDDINGS:
            # No max_tokens and the worst case does not fit: ask for what does, if enough does.
            choices = body.get("n") or 1
            for _ in range(CLAMP_ATTEMPTS):
                fits = guardrails.affordable_output(result, route, call.prompt_estimate, choices)
                if fits < self.settings.min_clamped_output_tokens or fits * choices >= output:
                    break
                body["max_tokens"] = call.clamped = output = fits
                result, amount, tokens = await self.reserve_output(
                    call, key_rules, route, fits * choices
                )
                if not isinstance(result, Blocked):
                    break
        if isinstance(result, Blocked):
            raise guardrails.blocked(result, rules, amount, tokens)
        call.reserved = result

    def worst_cost(
        self, call: ProxyCall, body: dict[str, Any], route: ModelRoute, policy: EffectivePolicy
    ) -> int:
        """The most the call may cost on `route` (for a group's per-request cost ceiling)."""
        output = guardrails.output_tokens(call.endpoint, body, route, policy)
        return route.price.cost_nanos(call.prompt_estimate, output)

    async def reserve_output(
        self, call: ProxyCall, key_rules: KeyRules, route: ModelRoute, output: int
    ) -> tuple[Reserved | Blocked, int, int]:
        """One reservation for the prompt and `output` tokens at `route`'s price: (result,
        nano-USD, tokens)."""
        tokens = call.prompt_estimate + output
        amount = route.price.cost_nanos(call.prompt_estimate, output)
        plan = key_rules.plan(call.request_id, amount, tokens, call.received_at)
        try:
            return await self.guard.reserve(plan), amount, tokens
        except CounterStoreUnavailable as exc:
            raise guardrails.unavailable(exc) from None
        except DatabaseUnavailable:  # a counter to rebuild from the database
            raise refusals.DATABASE_UNAVAILABLE.error() from None

    # --- 5. forward ---------------------------------------------------------------------------

    def attempts(self, call: ProxyCall) -> Attempts:
        settings = self.settings
        return Attempts(
            call,
            self.state.health,
            self.state.balancer,
            max_attempts=settings.routing_max_attempts,
            deadline_seconds=settings.routing_retry_deadline_seconds,
            backoff_ms=settings.routing_retry_backoff_ms,
        )

    def preparer(
        self, call: ProxyCall, body: dict[str, Any], *, stream: bool
    ) -> Callable[[ModelRoute], UpstreamCall]:
        adapters = self.state.adapters

        def prepare(route: ModelRoute) -> UpstreamCall:
            adapter = adapters[route.provider.name]
            return _prepare(adapter.prepare, call.endpoint, body, route, stream=stream)

        return prepare

    async def forward(self, call: ProxyCall, body: dict[str, Any]) -> Response:
        attempts, prepare = self.attempts(call), self.preparer(call, body, stream=False)
        while True:
            route, upstream = await attempts.next(prepare)
            pool = self.state.pools[route.provider.name]
            try:
                async with asyncio.timeout(
                    route.provider.timeout_seconds or self.settings.upstream_timeout
                ):
                    response = await pool.post(upstream.url, upstream.headers, upstream.content)
                    await response.aread()  # closes the response, whatever happens
            except (TimeoutError, UpstreamError) as exc:
                await attempts.unanswered(route, exc)
                continue
            status = response.status_code
            if status >= 400:
                error = self.refused(route, status, response.content, response.headers)
                await attempts.refused(
                    route, status, error, response.headers, call.context_candidates
                )
                continue
            attempts.answered(route)
            break
        adapter = self.state.adapters[route.provider.name]
        try:
            content, usage = adapter.read(call.endpoint, response.content, route)
        except InvalidUpstreamResponse as exc:
            # Not tried elsewhere: the provider answered 2xx, and may have billed for it.
            raise upstream_errors.invalid(route, exc) from None
        await attempts.succeeded(route)
        headers = _answer_headers(call)
        await self.settle(call, status=200, usage=usage)
        return Response(content, media_type=_JSON, headers=headers)

    async def forward_stream(self, call: ProxyCall, body: dict[str, Any]) -> Response:
        attempts, prepare = self.attempts(call), self.preparer(call, body, stream=True)
        while True:
            route, upstream = await attempts.next(prepare)
            pool = self.state.pools[route.provider.name]
            try:
                response = await pool.post(upstream.url, upstream.headers, upstream.content)
            except UpstreamError as exc:
                await attempts.unanswered(route, exc)
                continue
            status = response.status_code
            if status >= 400:
                try:
                    content = await response.aread()
                except UpstreamError:
                    content = b""
                error = self.refused(route, status, content, response.headers)
                await attempts.refused(
                    route, status, error, response.headers, call.context_candidates
                )
                continue
            attempts.answered(route)
            break
        # From here the stream is this deployment's: nothing relayed can be taken back.
        await attempts.succeeded(route)
        reader = self.state.adapters[route.provider.name].stream_reader(
            call.endpoint, route, call.include_usage
        )
        headers = _answer_headers(call)

        async def never_relayed() -> None:
            # The relay never ran (the client left before the answer's headers went out): the
            # upstream was asked all the same; close it and bill what it was asked to process.
            await response.aclose()
            gone = _stream_outcome(call, reader, CLIENT_GONE_STATUS, CLIENT_GONE, None)
            self.settle_in_background(call, **gone)

        return RelayResponse(self.relay(call, response, reader), headers, never_relayed)

    async def relay(self, call: ProxyCall, response: UpstreamResponse, reader: StreamReader) -> Any:
        """Yield the client's SSE bytes. A stream that ends well is settled before its last
        event goes out (so a client that saw the end is metered durably); one cut by the
        upstream, after its error event; one the client left, in the background."""
        status, error_type, ttft_ms = 200, None, None
        settled = False
        # A stream may outlive its reservation's TTL: renew it while it runs.
        renew_at = call.started + self.guard.extend_every if call.reserved is not None else None
        try:
            async for data in response.aiter_raw():
                out = reader.feed(data)
                if out:
                    if ttft_ms is None:
                        ttft_ms = int((time.perf_counter() - call.started) * 1000)
                        self.mark_started(call, ttft_ms)
                    yield out
                if renew_at is not None and time.perf_counter() >= renew_at:
                    assert call.reserved is not None
                    self.guard.extend_soon(call.reserved)
                    renew_at += self.guard.extend_every
            last = reader.finish()
            await response.aclose()
            settled = True
            await self.settle_shielded(call, **_stream_outcome(call, reader, status, None, ttft_ms))
            yield last
        except UpstreamError as exc:
            route = call.route
            assert route is not None
            cut = upstream_errors.cut(route, exc)
            status, error_type = cut.status, cut.error_type
            await response.aclose()
            settled = True
            await self.settle_shielded(
                call, **_stream_outcome(call, reader, status, error_type, ttft_ms)
            )
            yield cut.sse_event()
        except BaseException:
            # The client went away (cancellation): bill what it received, then let it unwind.
            status, error_type = CLIENT_GONE_STATUS, CLIENT_GONE
            raise
        finally:
            await response.aclose()
            if not settled:
                self.settle_in_background(
                    call, **_stream_outcome(call, reader, status, error_type, ttft_ms)
                )

    def refused(
        self, route: ModelRoute, status: int, content: bytes, headers: Mapping[str, str]
    ) -> ProxyError:
        body = self.state.adapters[route.provider.name].error_body(status, content)
        return upstream_errors.refused(route, status, body, headers)

    # --- GET /v1/models -----------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        context = await self.authenticate(request)
        found = await self.rules_for(context)
        policy = found[1].policy if found is not None else None
        data = [
            {
                "id": route_id,
                "object": "model",
                "created": 0,
                "owned_by": served.primary.provider.name,
            }
            for route_id, served in self.state.models.items()
            if key_allows(context, route_id) and (policy is None or policy.allows_models(route_id))
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)


def _stream_outcome(
    call: ProxyCall, reader: StreamReader, status: int, error_type: str | None, ttft_ms: int | None
) -> dict[str, Any]:
    """What a stream's settlement records: the upstream's usage, else an estimate (marked)."""
    outcome = {"status": status, "error_type": error_type, "ttft_ms": ttft_ms}
    if reader.usage is None:
        usage = Usage(call.prompt_estimate, reader.estimated_completion_tokens)
        return {**outcome, "usage": usage, "estimated": True}
    return {**outcome, "usage": reader.usage}


def _answer_headers(call: ProxyCall) -> dict[str, str]:
    headers = rate_headers(call.reserved) if call.reserved is not None else {}
    if call.clamped is not None:
        headers[CLAMPED_HEADER] = str(call.clamped)
    route = call.route
    assert route is not None
    headers[MODEL_HEADER] = route.id
    headers[PROVIDER_HEADER] = route.provider.name
    headers[ATTEMPTS_HEADER] = str(call.attempts)
    return headers


def _presented_key(request: Request) -> str | None:
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("api-key") or headers.get("x-api-key") or None


def _prompt_estimate(endpoint: Endpoint, body: dict[str, Any]) -> int:
    if endpoint is Endpoint.CHAT:
        return estimate.chat_prompt_tokens(body)
    if endpoint is Endpoint.COMPLETIONS:
        return estimate.text_input_tokens(body.get("prompt"))
    return estimate.text_input_tokens(body.get("input"))


def _prepare(
    prepare: Callable[[Endpoint, dict[str, Any], ModelRoute, bool], UpstreamCall],
    endpoint: Endpoint,
    body: dict[str, Any],
    route: ModelRoute,
    *,
    stream: bool,
) -> UpstreamCall:
    try:
        return prepare(endpoint, body, route, stream)
    except UnsupportedRequest as exc:
        raise refusals.NOT_SUPPORTED_BY_PROVIDER.error(reason=str(exc), param=exc.param) from None
    except orjson.JSONEncodeError:
        # orjson reads up to 1024 levels of nesting but writes at most 254.
        raise refusals.BODY_TOO_DEEP.error() from None
