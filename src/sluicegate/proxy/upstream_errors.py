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
from sluicegate.providers.transport import UpstreamConnectError
from sluicegate.proxy import refusals
from sluicegate.proxy.errors import ProxyError

# Upstream answers that mean the gateway's provider configuration is wrong.
MISCONFIGURED = frozenset({401, 403, 404})

log = logging.getLogger("sluicegate.proxy")


def _failed(route: ModelRoute, kind: str, cause: str, upstream_status: int | None = None) -> None:
    UPSTREAM_ERRORS.labels(route.provider.name, kind).inc()
    log.warning(
        "upstream call failed: %s",
        cause,
        extra={
            "provider": route.provider.name,
            "model": route.upstream_model,
            "upstream_status": upstream_status,
        },
    )


def timed_out(route: ModelRoute) -> ProxyError:
    _failed(route, "timeout", "no answer in time")
    return refusals.UPSTREAM_TIMEOUT.error(provider=route.provider.name)


def invalid(route: ModelRoute, exc: Exception) -> ProxyError:
    _failed(route, "invalid_response", f"invalid answer: {exc}")
    return refusals.UPSTREAM_INVALID_RESPONSE.error(provider=route.provider.name, reason=str(exc))


def unreachable(route: ModelRoute, exc: Exception) -> ProxyError:
    kind = type(exc).__name__
    # A connect failure's message is the transport's own (an address, or what the outbound proxy
    # answered, never its credentials): the operator needs it to tell a refused connection from
    # a proxy asking for credentials. The client is told the kind only.
    detail = f"{kind}: {exc}" if isinstance(exc, UpstreamConnectError) else kind
    _failed(route, "connect", f"unreachable or cut off ({detail})")
    return refusals.UPSTREAM_UNREACHABLE.error(provider=route.provider.name, cause=kind)


def cut(route: ModelRoute, exc: Exception) -> ProxyError:
    """A stream the upstream broke off after it began (the client gets it as an error event)."""
    kind = type(exc).__name__
    _failed(route, "stream_cut", f"broke off the stream ({kind})")
    return refusals.UPSTREAM_STREAM_CUT.error(provider=route.provider.name, cause=kind)


def refused(
    route: ModelRoute, status: int, body: dict[str, Any], headers: Mapping[str, str]
) -> ProxyError:
    """The upstream answered `status` >= 400; `body` is its error in OpenAI's shape."""
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
        return refusals.UPSTREAM_FAILED.error(
            provider=route.provider.name, upstream_status=status, detail=body.get("message")
        )
    if status in MISCONFIGURED:
        return refusals.UPSTREAM_MISCONFIGURED.error(
            provider=route.provider.name, upstream_status=status
        )
    return ProxyError.from_body(status, body, error_type="upstream_rejected")
