"""Prometheus metrics of the gateway. Works across uvicorn workers through multiprocess mode.

With several workers the CLI sets PROMETHEUS_MULTIPROC_DIR before anything imports this module,
so every worker writes its samples where `/metrics` on any worker can sum them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Gateway overhead lives in the low milliseconds and upstream calls in seconds: cover both.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

HTTP_REQUESTS = Counter(
    "sluicegate_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "sluicegate_http_request_duration_seconds",
    "Time from request start to the end of the response body, by route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "sluicegate_upstream_errors_total",
    "Failed calls to an upstream provider, by provider and kind (status, timeout, connect, ...).",
    ["provider", "kind"],
)
ROUTING_ATTEMPTS = Counter(
    "sluicegate_routing_attempts_total",
    "Upstream attempts, by provider, deployment and outcome (ok, or the failure's kind).",
    ["provider", "deployment", "outcome"],
)
ROUTING_RETRIES = Counter(
    "sluicegate_routing_retries_total",
    "Attempts made after another failed for the same request, by provider and deployment.",
    ["provider", "deployment"],
)
ROUTING_FALLBACKS = Counter(
    "sluicegate_routing_fallbacks_total",
    "Requests answered by a fallback model instead of the one asked for, by asked and served.",
    ["requested_model", "served_model"],
)
ROUTING_COOLDOWNS = Counter(
    "sluicegate_routing_cooldowns_total",
    "Times a deployment was cooled down after failing (counted where the cooldown started).",
    ["deployment"],
)

USAGE_DRAINED = Counter(
    "sluicegate_usage_events_drained_total",
    "Usage events moved from the Redis usage streams into the database (new rows only).",
)
USAGE_STREAM_BACKLOG = Gauge(
    "sluicegate_usage_stream_backlog",
    "Usage events waiting in the Redis usage streams, not yet in the database.",
    multiprocess_mode="max",
)
USAGE_DRAIN_LAG = Gauge(
    "sluicegate_usage_drain_lag_seconds",
    "Age of the oldest usage event not yet drained into the database (0: none waiting).",
    multiprocess_mode="max",
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


def render_metrics() -> bytes:
    """The exposition text: this process's registry, or all workers' when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
