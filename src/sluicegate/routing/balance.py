"""The order of one model's deployments under its strategy, from what this process has seen:
`priority` (the file's priority, then file order), `weighted` (a random order drawn by weight),
`least_busy` (fewest requests in flight here), `lowest_latency` (moving average of the time to
the upstream's answer, unmeasured first so they get measured). A request's `sort` (price,
latency, throughput) wins over the strategy. Deployments past their rpm/tpm capacity this minute
go last. Load and latency are per process: each worker balances what it sends."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from sluicegate.providers.deployment import ModelRoute

# Weight of the newest sample in the moving averages: about the last ten requests count.
EWMA_ALPHA = 0.2
_MINUTE_MS = 60_000


@dataclass(slots=True)
class _Load:
    in_flight: int = 0
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    minute: int = -1
    requests: int = 0
    tokens: int = 0


class Balancer:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._load: dict[str, _Load] = {}
        self._random = rng or random.Random()  # noqa: S311  (load spreading, not secrets)

    def _of(self, route: ModelRoute) -> _Load:
        load = self._load.get(route.deployment)
        if load is None:
            load = self._load[route.deployment] = _Load()
        return load

    def order(
        self, routes: Sequence[ModelRoute], strategy: str, sort: str | None, now_ms: int
    ) -> list[ModelRoute]:
        ranked = self._ranked(routes, strategy, sort)
        if any(r.rpm is not None or r.tpm is not None for r in ranked):
            minute = now_ms // _MINUTE_MS
            ranked.sort(key=lambda r: self._full(r, minute))  # stable: full ones go last
        return ranked

    def _ranked(
        self, routes: Sequence[ModelRoute], strategy: str, sort: str | None
    ) -> list[ModelRoute]:
        by_priority = sorted(routes, key=lambda r: r.priority)
        if sort == "price":
            return sorted(by_priority, key=_unit_price)
        if sort == "latency" or (sort is None and strategy == "lowest_latency"):
            return sorted(by_priority, key=self._latency)
        if sort == "throughput":
            return sorted(by_priority, key=self._slowness)
        if strategy == "weighted":
            # Efraimidis-Spirakis: each drawn u**(1/w), largest first, is an ordering in which
            # each deployment comes first with probability weight / total.
            keyed = [(self._random.random() ** (1.0 / r.weight), i) for i, r in enumerate(routes)]
            return [routes[i] for _, i in sorted(keyed, reverse=True)]
        if strategy == "least_busy":
            return sorted(by_priority, key=lambda r: self._of(r).in_flight)
        return by_priority

    def _latency(self, route: ModelRoute) -> float:
        measured = self._of(route).latency_ms
        return -1.0 if measured is None else measured

    def _slowness(self, route: ModelRoute) -> float:
        measured = self._of(route).tokens_per_second
        return -1.0 if measured is None else -measured

    def _full(self, route: ModelRoute, minute: int) -> bool:
        load = self._of(route)
        if load.minute != minute:
            return False
        return (route.rpm is not None and load.requests >= route.rpm) or (
            route.tpm is not None and load.tokens >= route.tpm
        )

    # --- what the proxy reports ---------------------------------------------------------------

    def started(self, route: ModelRoute, now_ms: int) -> None:
        load = self._of(route)
        load.in_flight += 1
        minute = now_ms // _MINUTE_MS
        if load.minute != minute:
            load.minute, load.requests, load.tokens = minute, 0, 0
        load.requests += 1

    def answered(self, route: ModelRoute, latency_ms: float) -> None:
        """The upstream answered (a whole body, or a stream's first bytes) after latency_ms."""
        load = self._of(route)
        previous = load.latency_ms
        load.latency_ms = (
            latency_ms if previous is None else previous + EWMA_ALPHA * (latency_ms - previous)
        )

    def finished(self, route: ModelRoute, tokens: int, seconds: float) -> None:
        """The call on this deployment is over: `tokens` were used in `seconds`."""
        load = self._of(route)
        load.in_flight = max(load.in_flight - 1, 0)
        load.tokens += tokens
        if tokens > 0 and seconds > 0:
            rate = tokens / seconds
            previous = load.tokens_per_second
            load.tokens_per_second = (
                rate if previous is None else previous + EWMA_ALPHA * (rate - previous)
            )

    def in_flight(self, route: ModelRoute) -> int:
        return self._of(route).in_flight


def _unit_price(route: ModelRoute) -> int:
    price = route.price
    return price.input_nusd_per_mtok + price.output_nusd_per_mtok
