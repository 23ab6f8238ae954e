"""Every answer the proxy refuses a call with, declared once: status, OpenAI `type` and `code`,
the message (a typed template: mypy checks each site's fields), the `param`, the headers and the
`error_type` its usage event records. Sites raise them by name:

    raise MODEL_NOT_FOUND.error(model=name)

The table of docs/proxy.md#errors lists them for clients (tests/proxy/test_error_catalogue.py
keeps the two equal). Upstream errors passed through as the provider worded them
(ProxyError.from_body) are the provider's answers, not refusals of ours."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Generic, ParamSpec

from sluicegate.core.money import nanos_to_usd
from sluicegate.providers.base import Endpoint
from sluicegate.proxy.errors import ProxyError
from sluicegate.proxy.ratelimit import duration, limit_headers

P = ParamSpec("P")
# Called with the refusal's fields, like its message; returns the answer's headers.
HeaderRule = Callable[..., dict[str, str]]


class Refusal(Generic[P]):
    """One refusal of the proxy. `message` takes the fields as keywords only; `param` names the
    request field at fault, or `param_from` the field whose value does; `headers` is fixed or a
    rule over the fields. The usage event records `error_type`, else the code, else the type."""

    __slots__ = (
        "code",
        "error_type",
        "headers",
        "message",
        "name",
        "param",
        "param_from",
        "status",
        "type",
    )

    def __init__(
        self,
        message: Callable[P, str],
        *,
        status: int,
        type: str,
        code: str | None,
        error_type: str | None,
        param: str | None,
        param_from: str | None,
        headers: Mapping[str, str] | HeaderRule | None,
    ) -> None:
        self.name = message.__name__
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.error_type = error_type or code or type
        self.param = param
        self.param_from = param_from
        self.headers = headers

    def error(self, *args: P.args, **fields: P.kwargs) -> ProxyError:
        """The refusal with these fields, ready to raise."""
        param = self.param
        if self.param_from is not None:
            named = fields.get(self.param_from)
            param = named if isinstance(named, str) else None
        rule = self.headers
        headers = dict(rule(**fields) if callable(rule) else rule) if rule is not None else None
        return ProxyError(
            self.status,
            self.message(*args, **fields),
            type=self.type,
            code=self.code,
            param=param,
            headers=headers,
            error_type=self.error_type,
        )

    def __repr__(self) -> str:
        return f"<Refusal {self.name}: {self.status} {self.code or self.type}>"


def refusal(
    status: int,
    type: str,
    code: str | None,
    *,
    error_type: str | None = None,
    param: str | None = None,
    param_from: str | None = None,
    headers: Mapping[str, str] | HeaderRule | None = None,
) -> Callable[[Callable[P, str]], Refusal[P]]:
    """Declares the function below as the message of a refusal named after it."""

    def declare(message: Callable[P, str]) -> Refusal[P]:
        return Refusal(
            message,
            status=status,
            type=type,
            code=code,
            error_type=error_type,
            param=param,
            param_from=param_from,
            headers=headers,
        )

    return declare


def catalogue() -> list[Refusal[Any]]:
    """Every refusal declared here, in the order they are declared."""
    return [value for value in globals().values() if isinstance(value, Refusal)]


_INVALID = "invalid_request_error"
_AUTHENTICATION = "authentication_error"
_PERMISSION = "permission_error"
_QUOTA = "insufficient_quota"
_SERVER = "server_error"
_UPSTREAM = "upstream_error"


# --- authenticate -----------------------------------------------------------------------------


@refusal(401, _AUTHENTICATION, "invalid_api_key")
def KEY_MISSING() -> str:
    return (
        "No API key given. Send it as 'Authorization: Bearer <key>' (or an 'api-key' or "
        "'x-api-key' header)."
    )


@refusal(401, _AUTHENTICATION, "invalid_api_key")
def KEY_INVALID() -> str:
    return "The API key is not valid. Check it, or create a new one."


@refusal(401, _AUTHENTICATION, "invalid_api_key")
def KEY_INACTIVE(*, status: str) -> str:
    return f"This API key is {status}."


@refusal(401, _AUTHENTICATION, "invalid_api_key")
def KEY_EXPIRED() -> str:
    return "This API key has expired."


@refusal(403, _PERMISSION, "owner_frozen")
def OWNER_FROZEN() -> str:
    return "The owner of this API key is frozen."


@refusal(403, _PERMISSION, "owner_removed")
def OWNER_REMOVED() -> str:
    return "The owner of this API key is no longer a member of the organization."


@refusal(503, _SERVER, "database_unavailable", headers={"retry-after": "1"})
def DATABASE_UNAVAILABLE() -> str:
    return (
        "The gateway cannot reach its database to check this key or its guardrails; retry "
        "shortly. Keys and rules it checked in the last minutes keep working meanwhile."
    )


# --- parse --------------------------------------------------------------------------------------


@refusal(413, _INVALID, "request_too_large")
def BODY_TOO_LARGE(*, limit: int) -> str:
    return (
        f"The request body is larger than this gateway accepts ({limit} bytes; "
        "SLUICEGATE_MAX_BODY_BYTES)."
    )


@refusal(400, _INVALID, None, error_type="invalid_request")
def BODY_EMPTY() -> str:
    return "The request body is empty; send a JSON object."


@refusal(400, _INVALID, None, error_type="invalid_request")
def BODY_NOT_JSON(*, reason: str) -> str:
    return f"The request body is not valid JSON: {reason}"


@refusal(400, _INVALID, None, error_type="invalid_request")
def BODY_NOT_OBJECT() -> str:
    return "The request body must be a JSON object."


@refusal(400, _INVALID, None, param="model", error_type="invalid_request")
def MODEL_MISSING() -> str:
    return "'model' is required and must be a non-empty string."


@refusal(400, _INVALID, None, param_from="field", error_type="invalid_request")
def FIELD_WRONG_TYPE(*, field: str, expected: str) -> str:
    return f"'{field}' must be {expected}."


@refusal(400, _INVALID, None, param_from="field", error_type="invalid_request")
def FIELD_BELOW_ONE(*, field: str) -> str:
    return f"'{field}' must be at least 1."


@refusal(400, _INVALID, None, param="n", error_type="invalid_request")
def CHOICES_OUT_OF_RANGE(*, most: int) -> str:
    return f"'n' must be between 1 and {most}."


@refusal(400, _INVALID, None, param="messages", error_type="invalid_request")
def MESSAGES_MISSING() -> str:
    return "'messages' is required and must be a non-empty array."


@refusal(400, _INVALID, None, param_from="item", error_type="invalid_request")
def MESSAGE_WITHOUT_ROLE(*, item: str) -> str:
    return f"'{item}' must be an object with a 'role'."


@refusal(400, _INVALID, None, param="prompt", error_type="invalid_request")
def PROMPT_MISSING() -> str:
    return "'prompt' is required: a string or an array."


@refusal(400, _INVALID, None, param="stream", error_type="invalid_request")
def EMBEDDINGS_STREAMED() -> str:
    return "Embeddings cannot be streamed."


@refusal(400, _INVALID, None, param="input", error_type="invalid_request")
def INPUT_MISSING() -> str:
    return "'input' is required: a string or a non-empty array."


# --- policy ------------------------------------------------------------------------------------


@refusal(404, _INVALID, "model_not_found", param="model")
def MODEL_NOT_FOUND(*, model: str) -> str:
    return (
        f"The model '{model}' does not exist or is not served here. List the models this key "
        "may use with GET /v1/models."
    )


@refusal(403, _PERMISSION, "model_not_allowed")
def MODEL_NOT_ALLOWED_FOR_KEY(*, model: str) -> str:
    return f"This API key may not use the model '{model}'."


@refusal(400, _INVALID, None, param="model", error_type="invalid_request")
def MODEL_OF_OTHER_MODE(*, model: str, mode: str, endpoint: Endpoint) -> str:
    return f"The model '{model}' is a {mode} model and cannot serve /v1/{endpoint.value}."


# The guard words a policy's denial, naming the policy and where it is bound.
@refusal(403, _PERMISSION, "model_not_allowed")
def POLICY_DENIES_MODEL(*, denial: str) -> str:
    return denial


@refusal(403, _PERMISSION, "ip_not_allowed")
def POLICY_DENIES_ADDRESS(*, denial: str) -> str:
    return denial


@refusal(403, _PERMISSION, "max_tokens_not_allowed")
def MAX_TOKENS_NOT_ALLOWED(*, requested: int, policy: str, limit: int) -> str:
    return f"max_tokens {requested} is more than {policy} allows ({limit})."


# --- reserve -----------------------------------------------------------------------------------


@refusal(402, _QUOTA, "budget_exceeded")
def BUDGET_EXCEEDED(
    *, budget: str, exceeded: bool, spent: int, held: int, needs: int, resets_at: datetime | None
) -> str:
    """Amounts in nano-USD; `resets_at` None for a total budget."""
    state = "exceeded" if exceeded else "insufficient for this request"
    resets = (
        f" It starts again at {resets_at.isoformat().replace('+00:00', 'Z')}."
        if resets_at is not None
        else " It is a total budget: it does not reset."
    )
    return (
        f"Budget {state}: {budget}. Spent {nanos_to_usd(spent)} USD, {nanos_to_usd(held)} USD "
        f"held by requests in flight; this request needs up to {nanos_to_usd(needs)} USD."
        f"{resets} An admin above this scope can raise the budget; a smaller max_tokens may fit."
    )


@refusal(402, _QUOTA, "insufficient_credit", error_type="credit_exhausted")
def INSUFFICIENT_CREDIT(*, balance: int, held: int, needs: int, org_id: str) -> str:
    """Amounts in nano-USD."""
    state = "exhausted" if balance <= 0 else "insufficient for this request"
    return (
        f"The organization's credit is {state}: balance {nanos_to_usd(balance)} USD, "
        f"{nanos_to_usd(held)} USD held by requests in flight; this request needs up to "
        f"{nanos_to_usd(needs)} USD. An owner (or an admin allowed to) can top up with "
        f"POST /api/v1/orgs/{org_id}/credits/topups."
    )


def _retry_seconds(retry_after_ms: int) -> int:
    return max(1, math.ceil(retry_after_ms / 1000))


def _rate_limited(unit: str, scope: str, limit: int, used: int, retry_after_ms: int) -> str:
    return (
        f"Rate limit reached: {scope} allows {limit} {unit} per minute and {used} were used in "
        f"the last minute. Try again in {_retry_seconds(retry_after_ms)} s."
    )


def _retry_headers(unit: str) -> HeaderRule:
    """OpenAI's headers of a rate limit that lets the call through in `retry_after_ms`."""

    def build(*, limit: int, used: int, retry_after_ms: int, **_: object) -> dict[str, str]:
        headers = limit_headers(unit, limit, limit - used)
        headers["retry-after"] = str(_retry_seconds(retry_after_ms))
        headers[f"x-ratelimit-reset-{unit}"] = duration(retry_after_ms)
        return headers

    return build


def _tokens_limit_headers(*, limit: int, used: int, **_: object) -> dict[str, str]:
    return limit_headers("tokens", limit, limit - used)


# OpenAI's rate-limit errors carry the limit's unit as their type.
_RATE = "rate_limit_exceeded"


@refusal(429, "requests", _RATE, error_type="rate_limited", headers=_retry_headers("requests"))
def REQUESTS_RATE_LIMITED(*, scope: str, limit: int, used: int, retry_after_ms: int) -> str:
    return _rate_limited("requests", scope, limit, used, retry_after_ms)


@refusal(429, "tokens", _RATE, error_type="rate_limited", headers=_retry_headers("tokens"))
def TOKENS_RATE_LIMITED(*, scope: str, limit: int, used: int, retry_after_ms: int) -> str:
    return _rate_limited("tokens", scope, limit, used, retry_after_ms)


# Waiting does not help: the call alone needs more tokens than the limit allows per minute.
@refusal(429, "tokens", _RATE, error_type="rate_limited", headers=_tokens_limit_headers)
def OVER_TOKENS_PER_MINUTE(*, scope: str, limit: int, used: int, tokens: int) -> str:
    return (
        f"Request too large: it may use up to {tokens} tokens, more than the {limit} tokens per "
        f"minute that {scope} allows. Ask for fewer (max_tokens)."
    )


@refusal(503, _SERVER, "guardrails_unavailable")
def GUARDRAILS_UNAVAILABLE() -> str:
    return (
        "The gateway cannot reach its counter store (Redis), so it cannot enforce budgets and "
        "rate limits; calls are refused until it is back. Operators: check Redis, or set "
        "SLUICEGATE_GUARD_FAILURE_MODE=open to admit calls under rate limits and soft budgets "
        "against per-process counters meanwhile."
    )


@refusal(503, _SERVER, "guardrails_unavailable")
def MONEY_CHECKS_UNAVAILABLE() -> str:
    return (
        "The gateway cannot reach its counter store (Redis), and this key is under a hard "
        "budget or prepaid credit, which no gateway process can enforce alone; calls are "
        "refused until it is back (even with SLUICEGATE_GUARD_FAILURE_MODE=open, which admits "
        "only calls under rate limits and soft budgets). Operators: check Redis."
    )


# --- route ------------------------------------------------------------------------------------


@refusal(400, _INVALID, None, param_from="field", error_type="invalid_request")
def ROUTING_FIELD_INVALID(*, field: str, problem: str) -> str:
    """A bad `models` array or `provider` object (routing/preferences.py)."""
    return f"{problem}."


@refusal(403, _PERMISSION, "no_compliant_provider")
def NO_COMPLIANT_PROVIDER(*, requirement: str) -> str:
    return (
        f"No provider serving this model meets {requirement}; nothing was sent upstream. Ask "
        "for another model, or an admin for a provider that qualifies."
    )


@refusal(403, _PERMISSION, "cost_ceiling_exceeded")
def COST_CEILING_EXCEEDED(*, reason: str) -> str:
    return f"{reason}. Lower max_tokens or shorten the prompt, or ask for a cheaper model."


@refusal(
    503,
    _UPSTREAM,
    "deployments_cooling_down",
    headers=lambda **f: {"retry-after": str(f["retry_after"])},
)
def DEPLOYMENTS_COOLING_DOWN(*, reason: str, retry_after: int) -> str:
    return (
        f"No deployment can take the request now: {reason} after repeated failures. Retry in "
        f"{retry_after} s."
    )


# --- forward -----------------------------------------------------------------------------------


@refusal(400, _INVALID, None, param_from="param", error_type="invalid_request")
def NOT_SUPPORTED_BY_PROVIDER(*, reason: str, param: str | None) -> str:
    """The provider adapter's own words (UnsupportedRequest)."""
    return reason


@refusal(400, _INVALID, None, error_type="invalid_request")
def BODY_TOO_DEEP() -> str:
    return "The request body is nested too deeply to forward."


# What the provider did, in a sentence naming it: the client's call was fine.
@refusal(504, _UPSTREAM, "upstream_timeout")
def UPSTREAM_TIMEOUT(*, provider: str) -> str:
    return f"The upstream provider '{provider}' did not answer in time."


@refusal(502, _UPSTREAM, "upstream_invalid_response")
def UPSTREAM_INVALID_RESPONSE(*, provider: str, reason: str) -> str:
    return f"The upstream provider '{provider}' sent an invalid answer: {reason}"


@refusal(502, _UPSTREAM, "upstream_unreachable")
def UPSTREAM_UNREACHABLE(*, provider: str, cause: str) -> str:
    return (
        f"The upstream provider '{provider}' could not be reached or broke off its answer "
        f"({cause})."
    )


@refusal(502, _UPSTREAM, "upstream_stream_cut")
def UPSTREAM_STREAM_CUT(*, provider: str, cause: str) -> str:
    return f"The upstream provider '{provider}' broke off the stream: {cause}"


@refusal(502, _UPSTREAM, "upstream_error")
def UPSTREAM_FAILED(*, provider: str, upstream_status: int, detail: object) -> str:
    return f"The upstream provider '{provider}' failed ({upstream_status}): {detail}"


@refusal(502, _UPSTREAM, "upstream_misconfigured")
def UPSTREAM_MISCONFIGURED(*, provider: str, upstream_status: int) -> str:
    return (
        f"The upstream provider '{provider}' refused the gateway's call ({upstream_status}): its "
        "configuration here (base_url, API key, or the model's upstream name) needs an "
        "operator's attention."
    )


# --- routes ------------------------------------------------------------------------------------


@refusal(404, _INVALID, "unknown_url")
def UNKNOWN_PATH(*, path: str) -> str:
    served = ", ".join(f"/v1/{endpoint.value}" for endpoint in Endpoint)
    return f"Unknown path {path}. This gateway serves {served} and /v1/models."


@refusal(500, _SERVER, "internal_error")
def INTERNAL_ERROR() -> str:
    return (
        "The gateway failed unexpectedly; the request id in x-request-id identifies it in the "
        "gateway's logs."
    )
