"""Field types shared by the admin API's request schemas: names, ids, emails, model patterns.

Text that reaches the database is refused when it holds control characters (Postgres refuses
NUL outright; the others have no business in a name), so bad input is a 422, never a 500.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

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
