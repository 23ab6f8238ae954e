"""State the mock upstream is programmed with over /_mock/*: behaviour rules and request counters.

Pure data, no HTTP: app.py parses the requests and renders the answers.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from sluicegate.mockupstream import faults

# Behaviours a request can be given, per request or by a rule; "normal" answers normally even
# where another rule or a "mock-<behavior>" model name would not.
BEHAVIORS = (*faults.ERRORS, "slow", "cut", "invalid-json", "no-usage")
RULE_BEHAVIORS = (*BEHAVIORS, "normal")
DEFAULT_DELAY_MS = 2000
MAX_DELAY_MS = 600_000  # ten minutes: longer than any client timeout worth testing
_FIELDS = ("behavior", "times", "model", "retry_after", "delay_ms", "status")


class RuleError(ValueError):
    """A PUT /_mock/behavior body that cannot be a rule; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True, eq=False)
class Rule:
    """One programmed behaviour, with every parameter resolved to what will be answered."""

    id: int
    behavior: str
    model: str | None  # None: every model
    times: int | None  # None: until cleared
    remaining: int | None
    retry_after: str | None  # error-429, error-503 and error only
    delay_ms: int | None  # slow only
    status: int | None  # error behaviours only

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "behavior": self.behavior,
            "model": self.model,
            "times": self.times,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
            "delay_ms": self.delay_ms,
            "status": self.status,
        }


def _int_field(doc: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RuleError(f"'{name}' must be an integer from {low} to {high}, not {value!r}", name)
    return value


def _retry_after(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value and value.isascii() and value.isprintable():
        return value
    raise RuleError(
        f"'retry_after' must be seconds (a non-negative integer or a string such as \"2\"), "
        f"not {value!r}",
        "retry_after",
    )


def _only_for(doc: dict[str, Any], name: str, behaviors: tuple[str, ...], behavior: str) -> None:
    if doc.get(name) is not None and behavior not in behaviors:
        raise RuleError(
            f"'{name}' applies to {', '.join(behaviors)} only, not to {behavior!r}", name
        )


def parse_rule(doc: Any, rule_id: int) -> Rule:
    """The rule a PUT /_mock/behavior body asks for; RuleError says what to change."""
    if not isinstance(doc, dict):
        raise RuleError('The body must be a JSON object such as {"behavior": "error-500"}', None)
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise RuleError(
            f"Unknown field(s) {', '.join(unknown)}; expected {', '.join(_FIELDS)}", unknown[0]
        )
    behavior = doc.get("behavior")
    if behavior not in RULE_BEHAVIORS:
        raise RuleError(
            f"'behavior' must be one of {', '.join(RULE_BEHAVIORS)}, not {behavior!r}", "behavior"
        )
    model = doc.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise RuleError(f"'model' must be a non-empty string, not {model!r}", "model")
    times = _int_field(doc, "times", 1, 2**31)
    _only_for(doc, "retry_after", faults.RETRYABLE, behavior)
    _only_for(doc, "delay_ms", ("slow",), behavior)
    _only_for(doc, "status", ("error",), behavior)
    retry_after = _retry_after(doc.get("retry_after"))
    delay_ms = _int_field(doc, "delay_ms", 0, MAX_DELAY_MS)
    status = _int_field(doc, "status", faults.MIN_ERROR_STATUS, faults.MAX_ERROR_STATUS)
    if behavior == "slow" and delay_ms is None:
        delay_ms = DEFAULT_DELAY_MS
    if behavior in faults.ERRORS:
        status = faults.status_of(behavior, status)
        retry_after = faults.retry_after_of(behavior, retry_after)
    return Rule(rule_id, behavior, model, times, times, retry_after, delay_ms, status)


class Rules:
    """The programmed rules, most recent first.

    A request takes the most recent rule for its model, else the most recent rule without a
    model. Taking is synchronous, so counts stay exact however many requests are in flight: the
    app is single-threaded and takes before its first await.
    """

    __slots__ = ("_ids", "active")

    def __init__(self) -> None:
        self.active: list[Rule] = []  # the app checks emptiness before calling take()
        self._ids = itertools.count(1)

    def add(self, doc: Any) -> Rule:
        rule = parse_rule(doc, next(self._ids))
        self.active.insert(0, rule)
        return rule

    def take(self, model: str) -> Rule | None:
        """The rule that applies to a request for ``model``, its count spent; None if none does."""
        chosen = None
        for rule in self.active:
            if rule.model == model:
                chosen = rule
                break
            if rule.model is None and chosen is None:
                chosen = rule
        if chosen is not None and chosen.remaining is not None:
            chosen.remaining -= 1
            if not chosen.remaining:
                self.active.remove(chosen)
        return chosen

    def clear(self) -> int:
        cleared = len(self.active)
        self.active.clear()
        return cleared

    def as_json(self) -> dict[str, Any]:
        return {"rules": [r.as_json() for r in self.active]}


class Stats:
    """What the mock has answered since it started or was last cleared.

    ``requests`` counts what the request log records (everything but /health and /_mock/*);
    ``by_model`` the API calls among them that had a JSON object body; ``by_status`` the status
    of every counted answer (a deliberate cut counts as the 200 it had started).
    """

    __slots__ = ("by_model", "by_status", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.by_model: dict[str, int] = {}
        self.by_status: dict[int, int] = {}

    def answered(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def clear(self) -> int:
        cleared = self.requests
        self.requests = 0
        self.by_model.clear()
        self.by_status.clear()
        return cleared

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_model": dict(self.by_model),
            "by_status": {str(status): n for status, n in sorted(self.by_status.items())},
        }
