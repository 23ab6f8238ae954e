"""Sums is a named tuple for speed: `+`, `-` and Sums.total must add measure by measure (never
concatenate tuples), and agree with each other."""

from __future__ import annotations

from functools import reduce

from hypothesis import given
from hypothesis import strategies as st

from sluicegate.analytics.sums import MEASURES, Sums

sums = st.builds(Sums, *(st.integers(0, 10**15) for _ in MEASURES))


@given(st.lists(sums, max_size=20))
def test_total_is_the_sum_measure_by_measure(items: list[Sums]) -> None:
    total = Sums.total(items)
    assert isinstance(total, Sums) and len(total) == len(MEASURES)
    assert total == reduce(Sums.__add__, items, Sums())
    assert total == sum(items, Sums())
    for index, name in enumerate(MEASURES):
        assert getattr(total, name) == sum(item[index] for item in items)


@given(sums, sums)
def test_plus_and_minus_are_measure_by_measure(a: Sums, b: Sums) -> None:
    assert len(a + b) == len(MEASURES)
    assert (a + b).cost_nusd == a.cost_nusd + b.cost_nusd
    assert (a + b) - b == a
    assert (a + b).tokens == a.tokens + b.tokens


def test_no_sums_are_zeros() -> None:
    assert Sums.total([]) == Sums() == Sums(*([0] * len(MEASURES)))
