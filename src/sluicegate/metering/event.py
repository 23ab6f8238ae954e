"""The usage event: one per request, built once by the proxy's settlement (proxy/requests.py
`ProxyCall.usage_event`) and read by the stream, the drain, the writer, the rollups, the ledger's
debits and the alerts outbox. A TypedDict: a plain dict at run time (nothing is converted on the
hot path, and SQLAlchemy inserts it as it is), checked by mypy wherever a field is read.

Its keys are the columns of the usage table (metering/models.py `UsageEvent`), plus `crossed`,
the budget thresholds the request crossed (guard/counters.py `encode_crossings`), which the
writer turns into alerts instead of storing.

`routing` says how the request was served: `{"deployment": "<deployment id>", "attempts": <upstream
attempts, >= 1>, "fallback": <the serving deployment was not the requested model's first
candidate>, "fallback_model": "<model id that served, only when a fallback model did>"}`, or None
for a request that never reached a deployment (blocked before forwarding). It is read through
`routing_of`, which takes what it can use and ignores the rest, so a stored value of another
shape never fails a reader.

In a Redis stream the event is JSON carrying its format's version (`"v"`, metering/stream.py).
Version 1 is these fields; entries written before versions existed carry no `"v"` and are read
as version 1. A change to the fields bumps USAGE_EVENT_VERSION and teaches `upgraded` to read the
versions before it, so entries already queued when a new release starts still drain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple, NotRequired, TypedDict

USAGE_EVENT_VERSION = 1
# The key naming the version in the stream's JSON; never a column.
VERSION_KEY = "v"
# Deployment ids (providers file) are at most this long; the rollups key on them.
DEPLOYMENT_LENGTH = 200


class UsageRecord(TypedDict):
    request_id: str
    created_at: datetime
    org_id: str
    group_id: str
    key_id: str
    user_id: str
    requested_model: str
    served_model: str | None
    provider: str | None
    app: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_nusd: int
    latency_ms: int
    ttft_ms: int | None
    status_code: int
    error_type: str | None
    stream: bool
    usage_estimated: bool
    routing: dict[str, Any] | None
    crossed: NotRequired[str]


FIELDS = frozenset(UsageRecord.__annotations__) - {"crossed"}


class UnknownVersion(ValueError):
    """A usage entry written by a release newer than this one: not guessed at."""


def upgraded(fields: dict[str, Any]) -> UsageRecord:
    """A decoded stream entry as this release's event: its version read and removed, its fields
    checked (KeyError names one that is missing, ValueError one this version does not have)."""
    version = fields.pop(VERSION_KEY, 1)
    if version != USAGE_EVENT_VERSION:
        raise UnknownVersion(f"usage event version {version!r}; this release reads version 1")
    missing = FIELDS - fields.keys() - {"routing"}
    if missing:
        raise KeyError(f"usage event without {sorted(missing)}")
    extra = fields.keys() - FIELDS - {"crossed"}
    if extra:
        raise ValueError(f"usage event with unknown fields {sorted(extra)}")
    fields.setdefault("routing", None)
    record: UsageRecord = fields  # type: ignore[assignment]  # every field checked above
    return record


class Routing(NamedTuple):
    """What the usage event's `routing` says, each field None when it does not say it."""

    deployment: str | None = None
    attempts: int | None = None
    fallback: bool | None = None
    fallback_model: str | None = None


NO_ROUTING = Routing()


def routing_of(routing: Mapping[str, Any] | None) -> Routing:
    """The routing fields of a usage event's `routing` (None: the request reached no
    deployment); a field of the wrong type reads as absent."""
    if not isinstance(routing, Mapping):
        return NO_ROUTING
    attempts = routing.get("attempts")
    fallback = routing.get("fallback")
    fallback_model = routing.get("fallback_model")
    return Routing(
        deployment_of(routing) or None,
        attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
        fallback if isinstance(fallback, bool) else None,
        fallback_model if isinstance(fallback_model, str) and fallback_model else None,
    )


def deployment_of(routing: Mapping[str, Any] | None) -> str:
    """The deployment that served, as the rollups key it: '' when the request reached none."""
    if not isinstance(routing, Mapping):
        return ""
    deployment = routing.get("deployment")
    return deployment[:DEPLOYMENT_LENGTH] if isinstance(deployment, str) else ""
