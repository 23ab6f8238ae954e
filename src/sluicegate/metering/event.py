"""The usage event: one per request, built once by the proxy's settlement (proxy/requests.py
`ProxyCall.usage_event`) and read by the stream, the drain, the writer, the rollups, the ledger's
debits and the alerts outbox. A TypedDict: a plain dict at run time (nothing is converted on the
hot path, and SQLAlchemy inserts it as it is), checked by mypy wherever a field is read.

Its keys are the columns of the usage table (metering/models.py `UsageEvent`), plus `crossed`,
the budget thresholds the request crossed (guard/counters.py `encode_crossings`), which the
writer turns into alerts instead of storing.

In a Redis stream the event is JSON carrying its format's version (`"v"`, metering/stream.py).
Version 1 is these fields; entries written before versions existed carry no `"v"` and are read
as version 1. A change to the fields bumps USAGE_EVENT_VERSION and teaches `upgraded` to read the
versions before it, so entries already queued when a new release starts still drain.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NotRequired, TypedDict

USAGE_EVENT_VERSION = 1
# The key naming the version in the stream's JSON; never a column.
VERSION_KEY = "v"


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
