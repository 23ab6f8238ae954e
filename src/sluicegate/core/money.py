"""Money is an int of nano-USD (1e-9 USD) everywhere inside; the API shows exact decimal strings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("0.000000001")


class MoneyError(ValueError):
    """A value that cannot be read as an exact amount of USD."""


def usd_to_nanos(value: str | int | Decimal | float) -> int:
    """Parse USD given as a decimal string or number into nano-USD, refusing sub-nano precision.

    Floats are accepted because JSON clients send numbers, but they go through their shortest
    repr (`0.1` -> "0.1"), never through binary arithmetic.
    """
    if isinstance(value, bool):
        raise MoneyError("a boolean is not an amount of money")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"{value!r} is not a decimal amount of USD") from exc
    if not amount.is_finite():
        raise MoneyError(f"{value!r} is not a finite amount of USD")
    nanos = amount * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise MoneyError(
            f"{value!r} has more than 9 decimal places (1 nano-USD is the smallest unit)"
        )
    return int(nanos)


def nanos_to_usd(nanos: int) -> str:
    """Format nano-USD as an exact decimal string with 9 places: 12500000000 -> "12.500000000"."""
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), NANOS_PER_USD)
    return f"{sign}{whole}.{frac:09d}"


def cost_nanos(tokens: int, usd_per_million_tokens_nanos: int) -> int:
    """Cost of `tokens` at a price given in nano-USD per 1M tokens, rounded half up to 1 nano-USD.

    Prices per token are below a nano-USD for cheap models, so we multiply first and divide once.
    """
    return (tokens * usd_per_million_tokens_nanos + 500_000) // 1_000_000
