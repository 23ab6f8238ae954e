"""The guardrail stage of the pipeline in the proxy's terms: what a request reserves, which
refusal (proxy/refusals.py) answers when a policy, budget, credit or rate limit stops it (403,
402, 429, 503), and the `x-ratelimit-*` headers clients know from OpenAI."""

from __future__ import annotations

from typing import Any

from sluicegate.guard.counters import (
    Blocked,
    BudgetCounter,
    CounterStoreUnavailable,
    CreditCounter,
    RateCounter,
    Reserved,
)
from sluicegate.guard.failopen import MoneyChecksUnavailable
from sluicegate.guard.policy import EffectivePolicy
from sluicegate.guard.rules import OrgRules
from sluicegate.providers.base import Endpoint
from sluicegate.providers.config import ModelRoute
from sluicegate.proxy import refusals
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.ratelimit import limit_headers

MAX_TOKEN_FIELDS = ("max_completion_tokens", "max_tokens")


def output_tokens(
    endpoint: Endpoint, body: dict[str, Any], route: ModelRoute, policy: EffectivePolicy
) -> int:
    """The most output a request may produce: its own max_tokens, else the model's limit, capped
    by policy. A request asking for more than a policy allows is refused (403); one that asks
    for nothing gets the cap written into its body, so the upstream cannot exceed what was
    reserved."""
    if endpoint is Endpoint.EMBEDDINGS:
        return 0
    requested = next((body[f] for f in MAX_TOKEN_FIELDS if body.get(f) is not None), None)
    cap = policy.max_tokens
    if cap is not None:
        limit = cap.rule.max_tokens or 0
        if requested is not None and requested > limit:
            raise refusals.MAX_TOKENS_NOT_ALLOWED.error(
                requested=requested, policy=cap.describe(), limit=limit
            )
        if requested is None:
            body["max_tokens"] = requested = limit
    per_choice: int = requested if requested is not None else route.max_output_tokens
    # validate_body allows only integers 1..128 (or nothing) in both fields.
    return per_choice * (body.get("n") or 1)


def asked_for_output(body: dict[str, Any]) -> bool:
    """Whether the client set max_tokens (or max_completion_tokens) itself."""
    return any(body.get(field) is not None for field in MAX_TOKEN_FIELDS)


def affordable_output(result: Blocked, route: ModelRoute, prompt: int, choices: int) -> int:
    """The most output tokens per choice that fit what the blocking budget or credit has left,
    after the prompt (0 when not even the prompt fits, or a rate limit blocked)."""
    check = result.check
    if isinstance(check, BudgetCounter):
        room = check.limit - result.used - result.reserved
    elif isinstance(check, CreditCounter):
        room = result.used - result.reserved  # a credit's `used` is its balance
    else:
        return 0
    # The cost grows with the output: the largest count that fits, by bisection.
    fits, too_many = 0, route.max_output_tokens + 1
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if route.price.cost_nanos(prompt, middle * choices) <= room:
            fits = middle
        else:
            too_many = middle
    return fits


def check_policy(policy: EffectivePolicy, model: str, address: str | None) -> None:
    denial = policy.model_denial(model)
    if denial is not None:
        raise refusals.POLICY_DENIES_MODEL.error(denial=denial)
    denial = policy.ip_denial(address)
    if denial is not None:
        raise refusals.POLICY_DENIES_ADDRESS.error(denial=denial)


def unavailable(cause: CounterStoreUnavailable) -> ProxyError:
    if isinstance(cause, MoneyChecksUnavailable):
        return refusals.MONEY_CHECKS_UNAVAILABLE.error()
    return refusals.GUARDRAILS_UNAVAILABLE.error()


def blocked(result: Blocked, rules: OrgRules, amount: int, tokens: int) -> ProxyError:
    check = result.check
    if isinstance(check, BudgetCounter):
        return refusals.BUDGET_EXCEEDED.error(
            budget=rules.describe_budget(check),
            exceeded=result.used >= check.limit,
            spent=result.used,
            held=result.reserved,
            needs=amount,
            resets_at=check.spend.end,
        )
    if isinstance(check, CreditCounter):
        # A credit's `used` is its balance.
        return refusals.INSUFFICIENT_CREDIT.error(
            balance=result.used, held=result.reserved, needs=amount, org_id=rules.org_id
        )
    assert isinstance(check, RateCounter)
    scope = rules.describe_scope(check.scope_kind, check.scope_id)
    if result.retry_after_ms < 0:
        # Only a tokens limit can be smaller than one call (rpm is at least 1).
        return refusals.OVER_TOKENS_PER_MINUTE.error(
            scope=scope, limit=check.limit, used=result.used, tokens=tokens
        )
    limited = refusals.TOKENS_RATE_LIMITED if check.per_token else refusals.REQUESTS_RATE_LIMITED
    return limited.error(
        scope=scope, limit=check.limit, used=result.used, retry_after_ms=result.retry_after_ms
    )


def rate_headers(reserved: Reserved) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest requests and tokens limits that apply."""
    headers: dict[str, str] = {}
    for per_token, unit in ((False, "requests"), (True, "tokens")):
        states = [s for s in reserved.rates if s.counter.per_token is per_token]
        if not states:
            continue
        tightest = min(states, key=lambda s: s.remaining)
        limit, remaining = tightest.counter.limit, tightest.remaining
        headers.update(limit_headers(unit, limit, remaining, tightest.reset_ms))
    return headers
