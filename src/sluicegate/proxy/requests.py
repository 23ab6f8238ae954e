"""One proxied call's context, and reading the client's body: size limit, JSON, the few fields
the gateway itself relies on. Everything else in the body is forwarded untouched."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
from starlette.requests import Request

from sluicegate.core.ids import new_id
from sluicegate.guard.counters import Reserved
from sluicegate.keys.lookup import AuthContext
from sluicegate.metering.event import UsageRecord
from sluicegate.providers.base import Endpoint, Usage
from sluicegate.providers.config import ModelRoute
from sluicegate.proxy import refusals

# Longer app names are cut; they are labels in analytics, not free text.
APP_NAME_LIMIT = 200
# OpenAI's own ceiling for `n`.
MAX_CHOICES = 128


class ProxyCall:
    """What the pipeline learns about one request as it goes."""

    __slots__ = (
        "app",
        "attempts",
        "candidates",
        "clamped",
        "context",
        "context_candidates",
        "endpoint",
        "in_flight",
        "include_usage",
        "prompt_estimate",
        "received_at",
        "request_id",
        "requested_model",
        "reserved",
        "route",
        "settled",
        "started",
        "stream",
    )

    def __init__(
        self,
        request: Request,
        context: AuthContext,
        endpoint: Endpoint,
        started: float,
        received_at: datetime,
    ) -> None:
        state = request.scope.get("state") or {}
        self.request_id: str = state.get("request_id") or new_id("req")
        self.context = context
        self.endpoint = endpoint
        self.started = started
        self.received_at = received_at
        headers = request.headers
        app = headers.get("x-title") or headers.get("http-referer")
        self.app: str | None = app[:APP_NAME_LIMIT] if app else None
        self.requested_model = ""
        # The deployment of the current (at the end: the last) attempt; the candidates to try in
        # order, and those to try instead on a context-window error (routing/plan.py).
        self.route: ModelRoute | None = None
        self.candidates: list[ModelRoute] = []
        self.context_candidates: list[ModelRoute] = []
        self.attempts = 0
        # The deployment a call is running on now, for the balancer's in-flight count.
        self.in_flight: ModelRoute | None = None
        self.reserved: Reserved | None = None
        # Claimed by the one settlement of this call (proxy/settlement.py).
        self.settled = False
        self.stream = False
        self.include_usage = False
        self.prompt_estimate = 0
        # The max_tokens the gateway set to fit the budget or credit left (the client set none).
        self.clamped: int | None = None

    def claim_settlement(self) -> bool:
        """True once: to whoever settles the call (proxy/settlement.py), before any await."""
        if self.settled:
            return False
        self.settled = True
        return True

    def cost_of(self, tokens: Usage) -> int:
        """What `tokens` of this call cost at its model's price, nano-USD."""
        route = self.route
        if route is None or not (tokens.prompt_tokens or tokens.completion_tokens):
            return 0
        return route.price.cost_nanos(
            tokens.prompt_tokens, tokens.completion_tokens, tokens.cached_tokens
        )

    def usage_event(
        self,
        tokens: Usage,
        cost: int,
        *,
        status: int,
        error_type: str | None,
        estimated: bool,
        ttft_ms: int | None,
    ) -> UsageRecord:
        """The call's usage event (metering/event.py), as its settlement records it."""
        context, route = self.context, self.route
        return {
            "request_id": self.request_id,
            "created_at": self.received_at,
            "org_id": context.org_id,
            "group_id": context.group_id,
            "key_id": context.key_id,
            "user_id": context.owner_user_id,
            "requested_model": self.requested_model[:200],
            "served_model": route.upstream_model if route else None,
            "provider": route.provider.name if route else None,
            "app": self.app,
            "prompt_tokens": tokens.prompt_tokens,
            "completion_tokens": tokens.completion_tokens,
            "cached_tokens": tokens.cached_tokens,
            "cost_nusd": cost,
            "latency_ms": int((time.perf_counter() - self.started) * 1000),
            "ttft_ms": ttft_ms,
            "status_code": status,
            "error_type": error_type,
            "stream": self.stream,
            "usage_estimated": estimated,
            "routing": self.routing() if route is not None and self.attempts else None,
        }

    def routing(self) -> dict[str, Any]:
        """How the call was routed, for its usage event: the deployment that served (or last
        failed), the attempts made, and whether a fallback served."""
        route = self.route
        assert route is not None
        first = self.candidates[0] if self.candidates else route
        routing: dict[str, Any] = {
            "deployment": route.deployment,
            "attempts": self.attempts,
            "fallback": route is not first,
        }
        if route.id != self.requested_model:
            routing["fallback_model"] = route.id
        return routing


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes (413) without reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise refusals.BODY_TOO_LARGE.error(limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise refusals.BODY_TOO_LARGE.error(limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def validate_body(endpoint: Endpoint, raw: bytes) -> dict[str, Any]:
    """Parse and check only what the gateway relies on; never a 500 for any input."""
    if not raw:
        raise refusals.BODY_EMPTY.error()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise refusals.BODY_NOT_JSON.error(reason=str(exc)) from None
    if not isinstance(body, dict):
        raise refusals.BODY_NOT_OBJECT.error()
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise refusals.MODEL_MISSING.error()
    _optional(body, "stream", bool, "a boolean")
    _optional(body, "stream_options", dict, "an object")
    for field in ("max_tokens", "max_completion_tokens"):
        value = _optional(body, field, int, "an integer")
        if value is not None and value < 1:
            raise refusals.FIELD_BELOW_ONE.error(field=field)
    choices = _optional(body, "n", int, "an integer")
    if choices is not None and not 1 <= choices <= MAX_CHOICES:
        raise refusals.CHOICES_OUT_OF_RANGE.error(most=MAX_CHOICES)
    if endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise refusals.MESSAGES_MISSING.error()
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise refusals.MESSAGE_WITHOUT_ROLE.error(item=f"messages[{index}]")
    elif endpoint is Endpoint.COMPLETIONS:
        if not isinstance(body.get("prompt"), str | list):
            raise refusals.PROMPT_MISSING.error()
    else:
        if body.get("stream") is True:
            raise refusals.EMBEDDINGS_STREAMED.error()
        value = body.get("input")
        if not isinstance(value, str | list) or (isinstance(value, list) and not value):
            raise refusals.INPUT_MISSING.error()
    return body


def _optional(body: dict[str, Any], field: str, kind: type, described: str) -> Any:
    value = body.get(field)
    if value is None:
        return None
    # bool is an int in Python; JSON's true is not a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise refusals.FIELD_WRONG_TYPE.error(field=field, expected=described)
    return value
