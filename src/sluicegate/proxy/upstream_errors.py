"""What the client is told when the upstream provider fails, and what the operator is told: each
failure counted in `sluicegate_upstream_errors_total` and logged at warning with the provider,
the model, the status and the cause (never the upstream's URL, which may hold credentials, nor
its error message, which may quote the request).

An upstream refusal the client can fix (400, 413, 422: its body) or wait out (429) passes
through as the upstream worded it. One only the operator can fix (401 and 403: the provider's
key or account; 404: its base_url or the model's upstream name) is a 502 naming the provider:
the client's request was fine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sluicegate.core.metrics import UPSTREAM_ERRORS
from sluicegate.providers.config import ModelRoute
from sluicegate.proxy.errors import ProxyError

# Upstream answers that mean the gateway's provider configuration is wrong.
MISCONFIGURED = frozenset({401, 403, 404})

log = logging.getLogger("sluicegate.proxy")


def _failed(route: ModelRoute, kind: str, cause: str, status: int | None = None) -> None:
    UPSTREAM_ERRORS.labels(route.provider.name, kind).inc()
    log.warning(
        "upstream call failed: %s",
        cause,
        extra={
            "provider": route.provider.name,
            "model": route.upstream_model,
            "upstream_status": status,
        },
    )


def timed_out(route: ModelRoute) -> ProxyError:
    _failed(route, "timeout", "no answer in time")
    return ProxyError(
        504,
        f"The upstream provider '{route.provider.name}' did not answer in time.",
        type="upstream_error",
        code="upstream_timeout",
    )


def invalid(route: ModelRoute, exc: Exception) -> ProxyError:
    _failed(route, "invalid_response", f"invalid answer: {exc}")
    return ProxyError(
        502,
        f"The upstream provider '{route.provider.name}' sent an invalid answer: {exc}",
        type="upstream_error",
        code="upstream_invalid_response",
    )


def unreachable(route: ModelRoute, exc: Exception) -> ProxyError:
    _failed(route, "connect", f"unreachable or cut off ({type(exc).__name__})")
    return ProxyError(
        502,
        f"The upstream provider '{route.provider.name}' could not be reached or broke "
        f"off its answer ({type(exc).__name__}).",
        type="upstream_error",
        code="upstream_unreachable",
    )


def cut(route: ModelRoute, exc: Exception) -> ProxyError:
    """A stream the upstream broke off after it began (the client gets it as an error event)."""
    _failed(route, "stream_cut", f"broke off the stream ({type(exc).__name__})")
    return ProxyError(
        502,
        f"The upstream provider '{route.provider.name}' broke off the stream: {type(exc).__name__}",
        type="upstream_error",
        code="upstream_stream_cut",
    )


def refused(
    route: ModelRoute, status: int, body: dict[str, Any], headers: Mapping[str, str]
) -> ProxyError:
    """The upstream answered `status` >= 400; `body` is its error in OpenAI's shape."""
    name = route.provider.name
    kind = body.get("code") or body.get("type") or "-"
    _failed(route, str(status), f"HTTP {status} ({kind})", status)
    if status == 429:
        retry = headers.get("retry-after")
        return ProxyError.from_body(
            429,
            body,
            headers={"retry-after": retry} if retry else None,
            error_type="upstream_rate_limited",
        )
    if status >= 500:
        return ProxyError(
            502,
            f"The upstream provider '{name}' failed ({status}): {body.get('message')}",
            type="upstream_error",
            code="upstream_error",
        )
    if status in MISCONFIGURED:
        return ProxyError(
            502,
            f"The upstream provider '{name}' refused the gateway's call ({status}): its "
            "configuration here (base_url, API key, or the model's upstream name) needs an "
            "operator's attention.",
            type="upstream_error",
            code="upstream_misconfigured",
        )
    return ProxyError.from_body(status, body, error_type="upstream_rejected")
