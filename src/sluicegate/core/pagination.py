"""Cursor pagination: lists are ordered by a unique key (time-ordered ids, or a sequence), and
the cursor is the opaque encoding of the last key a page returned."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from sluicegate.core.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MAX_CURSOR_LENGTH = 200
# Integer keys are BIGINT columns.
_LARGEST_KEY = 2**63 - 1

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(value: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([value])).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type[str] | type[int] = str) -> Any:
    """The key after which the next page starts; None for the first page."""
    if cursor is None or cursor == "":
        return None
    problem = InvalidInput(
        "cursor: not a cursor this list returned; pass next_cursor from the previous page",
        details={"field": "cursor"},
    )
    if len(cursor) > _MAX_CURSOR_LENGTH:
        raise problem
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise problem from None
    if not (isinstance(decoded, list) and len(decoded) == 1):
        raise problem
    value = decoded[0]
    if type(value) is not kind:
        raise problem
    if isinstance(value, str) and "\x00" in value:
        raise problem
    if isinstance(value, int) and not -_LARGEST_KEY <= value <= _LARGEST_KEY:
        raise problem
    return value


async def paginate(
    session: AsyncSession,
    statement: Select[Any],
    key: InstrumentedAttribute[Any],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
    key_type: type[str] | type[int] = str,
) -> tuple[list[Any], str | None]:
    """One page of the entities `statement` selects, ordered by their unique attribute `key`,
    and the cursor of the next page (None on the last)."""
    after = decode_cursor(cursor, key_type)
    if after is not None:
        statement = statement.where(key < after if descending else key > after)
    statement = statement.order_by(key.desc() if descending else key.asc()).limit(limit + 1)
    rows = list(await session.scalars(statement))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(getattr(rows[-1], key.key))
