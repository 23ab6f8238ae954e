"""The order of one model's deployments: by strategy (priority, weighted, least_busy,
lowest_latency), by the request's sort (price, latency, throughput), with deployments past their
rpm/tpm capacity this minute last."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from sluicegate.providers.deployment import STRATEGIES, ModelRoute
from sluicegate.routing.balance import Balancer
from tests.routing.builders import USD, names, price, provider, route

MINUTE_MS = 60_000
# Far from the epoch, at the start of a minute.
NOW_MS = 1_767_225_600_000


def deployments(count: int, **fields: object) -> list[ModelRoute]:
    return [
        route("gpt-4o", provider(f"p{i}"), deployment=f"d{i}", **fields)  # type: ignore[arg-type]
        for i in range(count)
    ]


def first(routes: list[ModelRoute], strategy: str, sort: str | None = None) -> str:
    return Balancer().order(routes, strategy, sort, NOW_MS)[0].deployment


# --- priority -------------------------------------------------------------------------------


def test_priority_puts_the_lowest_priority_first_and_keeps_file_order_among_equals() -> None:
    d0, d1, d2, d3, d4 = (
        route("m", provider(f"p{i}"), deployment=f"d{i}", priority=p)
        for i, p in enumerate([2, 1, 2, 0, 1])
    )
    ordered = Balancer().order([d0, d1, d2, d3, d4], "priority", None, NOW_MS)
    assert names(ordered) == ["d3", "d1", "d4", "d0", "d2"]


def test_priority_with_equal_priorities_is_the_file_order() -> None:
    routes = deployments(6)
    for _ in range(3):
        assert Balancer().order(routes, "priority", None, NOW_MS) == routes


# --- weighted -------------------------------------------------------------------------------


def test_weighted_puts_each_deployment_first_about_as_often_as_its_weight_says() -> None:
    weights = [1, 3, 6]
    routes = [
        route("m", provider(f"p{i}"), deployment=f"d{i}", weight=w) for i, w in enumerate(weights)
    ]
    balancer = Balancer(random.Random(20260101))
    draws = 10_000
    firsts = Counter(
        balancer.order(routes, "weighted", None, NOW_MS)[0].deployment for _ in range(draws)
    )
    for i, weight in enumerate(weights):
        share = firsts[f"d{i}"] / draws
        assert abs(share - weight / sum(weights)) < 0.02, (f"d{i}", share)


def test_weighted_with_the_same_seed_draws_the_same_orders() -> None:
    routes = deployments(4)
    balancers = [Balancer(random.Random(5)) for _ in range(2)]
    draws = [
        [names(b.order(routes, "weighted", None, NOW_MS)) for _ in range(20)] for b in balancers
    ]
    assert draws[0] == draws[1]
    assert len({tuple(order) for order in draws[0]}) > 1, "the order is drawn, not fixed"


# --- least busy -----------------------------------------------------------------------------


def test_least_busy_puts_the_one_with_fewest_in_flight_first() -> None:
    balancer = Balancer()
    a, b = deployments(2)
    balancer.started(a, NOW_MS)
    assert names(balancer.order([a, b], "least_busy", None, NOW_MS)) == ["d1", "d0"]
    balancer.started(b, NOW_MS)
    balancer.started(b, NOW_MS)
    assert names(balancer.order([a, b], "least_busy", None, NOW_MS)) == ["d0", "d1"]
    balancer.finished(b, tokens=10, seconds=1.0)
    balancer.finished(b, tokens=10, seconds=1.0)
    assert (balancer.in_flight(a), balancer.in_flight(b)) == (1, 0)
    assert names(balancer.order([a, b], "least_busy", None, NOW_MS)) == ["d1", "d0"]


def test_least_busy_with_equal_load_keeps_priority_order() -> None:
    a, b = (route("m", provider(f"p{i}"), deployment=f"d{i}", priority=1 - i) for i in range(2))
    assert names(Balancer().order([a, b], "least_busy", None, NOW_MS)) == ["d1", "d0"]


def test_in_flight_never_goes_below_zero() -> None:
    balancer = Balancer()
    [a] = deployments(1)
    balancer.finished(a, tokens=0, seconds=0.0)
    assert balancer.in_flight(a) == 0


# --- lowest latency -------------------------------------------------------------------------


def test_lowest_latency_puts_unmeasured_first_then_the_fastest() -> None:
    balancer = Balancer()
    slow, fast, unmeasured = deployments(3)
    balancer.answered(slow, 900.0)
    balancer.answered(fast, 120.0)
    ordered = balancer.order([slow, fast, unmeasured], "lowest_latency", None, NOW_MS)
    assert names(ordered) == ["d2", "d1", "d0"]


def test_latency_is_a_moving_average_so_one_slow_answer_does_not_demote_a_fast_deployment() -> None:
    balancer = Balancer()
    steady, spiky = deployments(2)
    for _ in range(10):
        balancer.answered(steady, 300.0)
        balancer.answered(spiky, 100.0)
    balancer.answered(spiky, 1_000.0)  # one slow answer: 0.8 * 100 + 0.2 * 1000 = 280
    assert names(balancer.order([steady, spiky], "lowest_latency", None, NOW_MS)) == ["d1", "d0"]


# --- the request's sort ---------------------------------------------------------------------


def test_sort_by_price_puts_the_cheapest_first_whatever_the_strategy() -> None:
    dear = route("m", provider("p0"), deployment="dear", cost=price(5 * USD, 15 * USD))
    cheap = route("m", provider("p1"), deployment="cheap", cost=price(USD, 2 * USD), priority=9)
    middle = route("m", provider("p2"), deployment="middle", cost=price(3 * USD, 3 * USD))
    for strategy in STRATEGIES:
        ordered = Balancer(random.Random(1)).order([dear, cheap, middle], strategy, "price", NOW_MS)
        assert names(ordered) == ["cheap", "middle", "dear"], strategy


def test_sort_by_latency_puts_the_fastest_measured_first() -> None:
    balancer = Balancer()
    slow, fast = deployments(2)
    balancer.answered(slow, 500.0)
    balancer.answered(fast, 50.0)
    assert names(balancer.order([slow, fast], "priority", "latency", NOW_MS)) == ["d1", "d0"]


def test_sort_by_throughput_puts_the_most_tokens_per_second_first() -> None:
    balancer = Balancer()
    slow, fast = deployments(2)
    for r, tokens in ((slow, 200), (fast, 2_000)):
        balancer.started(r, NOW_MS)
        balancer.finished(r, tokens=tokens, seconds=2.0)
    assert names(balancer.order([slow, fast], "priority", "throughput", NOW_MS)) == ["d1", "d0"]


def test_sort_by_throughput_tries_unmeasured_deployments_first_so_they_get_measured() -> None:
    balancer = Balancer()
    fast, unmeasured, slow = deployments(3)
    for r, tokens in ((fast, 10), (slow, 1)):
        balancer.started(r, NOW_MS)
        balancer.finished(r, tokens=tokens, seconds=2.0)
    ranked = balancer.order([fast, unmeasured, slow], "priority", "throughput", NOW_MS)
    assert names(ranked) == ["d1", "d0", "d2"]


# --- capacity -------------------------------------------------------------------------------


def test_a_deployment_at_its_rpm_this_minute_goes_last_and_a_new_minute_resets_it() -> None:
    balancer = Balancer()
    busy = route("m", provider("p0"), deployment="busy", rpm=2)
    spare = route("m", provider("p1"), deployment="spare", priority=1)
    balancer.started(busy, NOW_MS)
    assert names(balancer.order([busy, spare], "priority", None, NOW_MS)) == ["busy", "spare"]
    balancer.started(busy, NOW_MS + 1_000)
    assert names(balancer.order([busy, spare], "priority", None, NOW_MS + 2_000)) == [
        "spare",
        "busy",
    ]
    next_minute = NOW_MS + MINUTE_MS
    assert names(balancer.order([busy, spare], "priority", None, next_minute)) == ["busy", "spare"]


def test_a_deployment_past_its_tpm_this_minute_goes_last() -> None:
    balancer = Balancer()
    busy = route("m", provider("p0"), deployment="busy", tpm=1_000)
    spare = route("m", provider("p1"), deployment="spare", priority=1)
    balancer.started(busy, NOW_MS)
    balancer.finished(busy, tokens=999, seconds=1.0)
    assert names(balancer.order([busy, spare], "priority", None, NOW_MS)) == ["busy", "spare"]
    balancer.started(busy, NOW_MS)
    balancer.finished(busy, tokens=1, seconds=1.0)
    assert names(balancer.order([busy, spare], "priority", None, NOW_MS)) == ["spare", "busy"]
    assert names(balancer.order([busy, spare], "priority", None, NOW_MS + MINUTE_MS)) == [
        "busy",
        "spare",
    ]


def test_full_deployments_keep_their_strategy_order_among_themselves() -> None:
    balancer = Balancer()
    routes = [
        route("m", provider(f"p{i}"), deployment=f"d{i}", rpm=1, priority=3 - i) for i in range(4)
    ]
    for r in routes[1:3]:
        balancer.started(r, NOW_MS)
    assert names(balancer.order(routes, "priority", None, NOW_MS)) == ["d3", "d0", "d2", "d1"]


# --- invariants -----------------------------------------------------------------------------

loads = st.lists(
    st.tuples(
        st.integers(0, 3),  # requests started this minute
        st.none() | st.floats(1, 5_000),  # a latency answered, ms
        st.integers(0, 5_000),  # tokens of a finished call
    ),
    min_size=1,
    max_size=6,
)


@given(
    loads,
    st.sampled_from(STRATEGIES),
    st.none() | st.sampled_from(("price", "latency", "throughput")),
    st.data(),
)
def test_every_order_is_a_permutation_with_full_deployments_last(
    load: list[tuple[int, float | None, int]], strategy: str, sort: str | None, data: st.DataObject
) -> None:
    balancer = Balancer(random.Random(data.draw(st.integers(0, 2**32))))
    routes = [
        route(
            "m",
            provider(f"p{i}"),
            deployment=f"d{i}",
            cost=price(data.draw(st.integers(0, 9)) * USD, USD),
            priority=data.draw(st.integers(0, 3)),
            weight=data.draw(st.integers(1, 100)),
            rpm=data.draw(st.none() | st.integers(1, 3)),
            tpm=data.draw(st.none() | st.integers(1, 5_000)),
        )
        for i in range(len(load))
    ]
    for r, (started, latency, tokens) in zip(routes, load):
        for _ in range(started):
            balancer.started(r, NOW_MS)
        if latency is not None:
            balancer.answered(r, latency)
        if started:
            balancer.finished(r, tokens, 1.0)
    ordered = balancer.order(routes, strategy, sort, NOW_MS)
    assert sorted(names(ordered)) == sorted(names(routes))

    def full(r: ModelRoute) -> bool:
        started, _, tokens = load[routes.index(r)]
        used_tokens = tokens if started else 0
        return (r.rpm is not None and started >= r.rpm) or (
            r.tpm is not None and started > 0 and used_tokens >= r.tpm
        )

    flags = [full(r) for r in ordered]
    assert flags == sorted(flags), "a full deployment before one with room"
