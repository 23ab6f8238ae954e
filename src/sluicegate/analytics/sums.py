"""The measures of a set of rollup rows (Sums): what every analytics answer adds up."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Sums(NamedTuple):
    """The measures of a set of rollup rows. `requests` counts every request: failed (errors)
    and stopped by a guardrail (blocked) too.

    A named tuple, not a frozen dataclass, for speed (a year's series makes thousands, and a
    frozen dataclass takes four times as long to build); `+` and `-` add and subtract the
    measures (never tuple concatenation)."""

    requests: int = 0
    errors: int = 0
    blocked: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_nusd: int = 0
    latency_ms_sum: int = 0
    ttft_ms_sum: int = 0
    ttft_count: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def metric(self, name: str) -> int:
        if name == "cost":
            return self.cost_nusd
        if name == "tokens":
            return self.tokens
        return self.requests

    def __add__(self, other: Sums) -> Sums:  # type: ignore[override]
        return Sums(
            self.requests + other.requests,
            self.errors + other.errors,
            self.blocked + other.blocked,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cost_nusd + other.cost_nusd,
            self.latency_ms_sum + other.latency_ms_sum,
            self.ttft_ms_sum + other.ttft_ms_sum,
            self.ttft_count + other.ttft_count,
        )

    @staticmethod
    def total(items: Iterable[Sums]) -> Sums:
        """The sum of many (column by column, faster than adding them one by one); of none,
        zeros."""
        return Sums(*map(sum, zip(*items, strict=True)))

    def __sub__(self, other: Sums) -> Sums:
        return Sums(*(a - b for a, b in zip(self, other, strict=True)))


MEASURES = Sums._fields
