"""The guardrail stage of the pipeline in the proxy's terms: what a request reserves, and the
OpenAI-shaped answers when a policy, budget, credit or rate limit stops it (403, 402, 429, 503)
with the `x-ratelimit-*` headers clients know from OpenAI."""

from __future__ import annotations

import math
from typing import Any

from sluicegate.core.money import nanos_to_usd
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
from sluicegate.proxy.errors import ProxyError, forbidden

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
            raise forbidden(
                f"max_tokens {requested} is more than {cap.describe()} allows ({limit}).",
                "max_tokens_not_allowed",
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
        raise forbidden(denial, "model_not_allowed")
    denial = policy.ip_denial(address)
    if denial is not None:
        raise forbidden(denial, "ip_not_allowed")


def unavailable(cause: CounterStoreUnavailable) -> ProxyError:
    if isinstance(cause, MoneyChecksUnavailable):
        message = (
            "The gateway cannot reach its counter store (Redis), and this key is under a hard "
            "budget or prepaid credit, which no gateway process can enforce alone; calls are "
            "refused until it is back (even with SLUICEGATE_GUARD_FAILURE_MODE=open, which "
            "admits only calls under rate limits and soft budgets). Operators: check Redis."
        )
    else:
        message = (
            "The gateway cannot reach its counter store (Redis), so it cannot enforce budgets "
            "and rate limits; calls are refused until it is back. Operators: check Redis, or "
            "set SLUICEGATE_GUARD_FAILURE_MODE=open to admit calls under rate limits and soft "
            "budgets against per-process counters meanwhile."
        )
    return ProxyError(503, message, type="server_error", code="guardrails_unavailable")


def blocked(result: Blocked, rules: OrgRules, amount: int, tokens: int) -> ProxyError:
    check = result.check
    if isinstance(check, BudgetCounter):
        end = check.spend.end
        resets = (
            f" It starts again at {end.isoformat().replace('+00:00', 'Z')}."
            if end is not None
            else " It is a total budget: it does not reset."
        )
        state = "exceeded" if result.used >= check.limit else "insufficient for this request"
        return ProxyError(
            402,
            f"Budget {state}: {rules.describe_budget(check)}. Spent {nanos_to_usd(result.used)}"
            f" USD, {nanos_to_usd(result.reserved)} USD held by requests in flight; this request"
            f" needs up to {nanos_to_usd(amount)} USD.{resets} An admin above this scope can "
            "raise the budget; a smaller max_tokens may fit.",
            type="insufficient_quota",
            code="budget_exceeded",
            error_type="budget_exceeded",
        )
    if isinstance(check, CreditCounter):
        state = "exhausted" if result.used <= 0 else "insufficient for this request"
        return ProxyError(
            402,
            f"The organization's credit is {state}: balance {nanos_to_usd(result.used)} USD, "
            f"{nanos_to_usd(result.reserved)} USD held by requests in flight; this request needs"
            f" up to {nanos_to_usd(amount)} USD. An owner (or an admin allowed to) can top up "
            f"with POST /api/v1/orgs/{rules.org_id}/credits/topups.",
            type="insufficient_quota",
            code="insufficient_credit",
            error_type="credit_exhausted",
        )
    assert isinstance(check, RateCounter)
    return _rate_limited(result, check, rules, tokens)


def _rate_limited(result: Blocked, check: RateCounter, rules: OrgRules, tokens: int) -> ProxyError:
    unit = "tokens" if check.per_token else "requests"
    scope = rules.describe_scope(check.scope_kind, check.scope_id)
    headers = {
        f"x-ratelimit-limit-{unit}": str(check.limit),
        f"x-ratelimit-remaining-{unit}": str(max(0, check.limit - result.used)),
    }
    if result.retry_after_ms < 0:
        message = (
            f"Request too large: it may use up to {tokens} tokens, more than the {check.limit} "
            f"tokens per minute that {scope} allows. Ask for fewer (max_tokens)."
        )
    else:
        seconds = max(1, math.ceil(result.retry_after_ms / 1000))
        headers["retry-after"] = str(seconds)
        headers[f"x-ratelimit-reset-{unit}"] = duration(result.retry_after_ms)
        message = (
            f"Rate limit reached: {scope} allows {check.limit} {unit} per minute and "
            f"{result.used} were used in the last minute. Try again in {seconds} s."
        )
    return ProxyError(
        429,
        message,
        type=unit,
        code="rate_limit_exceeded",
        headers=headers,
        error_type="rate_limited",
    )


def rate_headers(reserved: Reserved) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the tightest requests and tokens limits that apply."""
    headers: dict[str, str] = {}
    for per_token, unit in ((False, "requests"), (True, "tokens")):
        states = [s for s in reserved.rates if s.counter.per_token is per_token]
        if not states:
            continue
        tightest = min(states, key=lambda s: s.remaining)
        headers[f"x-ratelimit-limit-{unit}"] = str(tightest.counter.limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(max(0, tightest.remaining))
        headers[f"x-ratelimit-reset-{unit}"] = duration(tightest.reset_ms)
    return headers


def duration(milliseconds: int) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '6m0s'."""
    if milliseconds < 1000:
        return f"{max(0, milliseconds)}ms"
    minutes, rest = divmod(milliseconds, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
