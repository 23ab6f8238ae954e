from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.money import MoneyError, cost_nanos, nanos_to_usd, usd_to_nanos

nanos = st.integers(min_value=-(10**15), max_value=10**15)


@given(nanos)
def test_usd_string_round_trips_exactly(amount: int) -> None:
    assert usd_to_nanos(nanos_to_usd(amount)) == amount


@given(nanos)
def test_formatted_usd_is_the_exact_decimal(amount: int) -> None:
    assert Decimal(nanos_to_usd(amount)) == Decimal(amount) / Decimal(10**9)


def test_contract_format_has_nine_places() -> None:
    assert nanos_to_usd(12_500_000_000) == "12.500000000"
    assert nanos_to_usd(-1) == "-0.000000001"


@pytest.mark.parametrize(
    ("given_value", "expected"),
    [("12.5", 12_500_000_000), (12.5, 12_500_000_000), (0.1, 100_000_000), (3, 3 * 10**9)],
)
def test_numbers_and_strings_are_accepted(given_value: object, expected: int) -> None:
    assert usd_to_nanos(given_value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["0.0000000001", "abc", "NaN", "Infinity", True])
def test_inexact_or_non_numeric_amounts_are_refused(bad: object) -> None:
    with pytest.raises(MoneyError):
        usd_to_nanos(bad)  # type: ignore[arg-type]


@given(
    st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=50),
    st.integers(min_value=0, max_value=100 * 10**9),
)
def test_cost_rounding_error_is_at_most_half_a_nano_per_call(tokens: list[int], price: int) -> None:
    exact = Decimal(sum(tokens)) * price / 10**6
    rounded = sum(cost_nanos(t, price) for t in tokens)
    assert abs(rounded - exact) <= Decimal(len(tokens)) / 2


def test_cost_of_a_million_tokens_is_the_price() -> None:
    assert cost_nanos(1_000_000, 150_000_000) == 150_000_000
