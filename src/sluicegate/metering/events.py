"""What metering announces (core/events.py) when it stores usage."""

from __future__ import annotations

from dataclasses import dataclass

from sluicegate.metering.event import UsageRecord


@dataclass(frozen=True, slots=True)
class BudgetThresholdsCrossed:
    """Usage events just stored (each once: a redelivered event stores nothing and announces
    nothing) whose requests crossed budget thresholds; their `crossed` field says which (the
    guard's settle step encodes them, guard/counters.py `Crossing`)."""

    usage_events: tuple[UsageRecord, ...]
