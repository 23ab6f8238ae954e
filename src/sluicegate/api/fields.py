"""Field types shared by the admin API's request schemas: names, ids, emails, model patterns.

Text that reaches the database is refused when it holds control characters (Postgres refuses
NUL outright; the others have no business in a name), so bad input is a 422, never a 500.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from sluicegate.core.money import MoneyError, usd_to_nanos

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ID_MAX_LENGTH = 64


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None


# An RFC 3339 instant with an offset, held in UTC (year 9999 at -05:00 does not fit).
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
Label = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_printable),
]
Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=320),
    AfterValidator(_printable),
]
# Free text searched for (a part of an email, say).
SearchText = Annotated[str, StringConstraints(max_length=320), AfterValidator(_printable)]
Password = Annotated[str, Field(min_length=1, max_length=1024)]
# Ids are compared, never parsed here: an id of the wrong shape is simply not found (404).
Id = Annotated[str, StringConstraints(max_length=ID_MAX_LENGTH), AfterValidator(_printable)]
ModelPattern = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_printable),
]
Role = Literal["owner", "admin", "member", "viewer"]

# A filter that takes several values (providers, deployments): at most this many, each parameter
# at most LISTED_TEXT_LENGTH characters (a comma list longer than that is sent repeated). The
# bounds keep the longest query (both lists full, every character percent-encoded) well inside
# what the HTTP server reads of a request line.
MAX_LISTED_VALUES = 10
LISTED_TEXT_LENGTH = 200


def _listed(given: list[str]) -> list[str]:
    """Values given as a comma list, repeated, or both: each once, in the order first given."""
    values = dict.fromkeys(part.strip() for text in given for part in text.split(","))
    values.pop("", None)
    if not values:
        raise ValueError("must name at least one value")
    if len(values) > MAX_LISTED_VALUES:
        raise ValueError(f"must name at most {MAX_LISTED_VALUES} values")
    return list(values)


# One or more values: `?provider=a,b`, `?provider=a&provider=b`, or both (a value holding a
# comma cannot be named).
ValueList = Annotated[
    list[
        Annotated[str, StringConstraints(max_length=LISTED_TEXT_LENGTH), AfterValidator(_printable)]
    ],
    Field(max_length=MAX_LISTED_VALUES),
    AfterValidator(_listed),
]


# Any one amount stays far inside int64 nano-USD, so sums of many never overflow.
MAX_USD_NANOS = 10**18


def _nanos(value: object) -> int:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("must be an amount of USD: a decimal string such as '12.5' or a number")
    try:
        nanos = usd_to_nanos(value.strip() if isinstance(value, str) else value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    if abs(nanos) > MAX_USD_NANOS:
        raise ValueError("must be at most 1000000000 USD (either sign)")
    return nanos


# USD in: a decimal string ("12.500000000") or a number, held as integer nano-USD; never a float.
USD = Annotated[
    int,
    BeforeValidator(_nanos),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": "USD as an exact decimal string (at most 9 decimals); numbers accepted",
            "examples": ["12.500000000"],
        }
    ),
]
