"""The SQL of the credit pool: ledger rows, the balance, filtered pages in (created_at, id) order
and the running balance of a page in one aggregate query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.errors import InvalidInput
from sluicegate.core.pagination import decode_cursor, encode_cursor
from sluicegate.metering.ledger import LedgerEntry

# Where a row stands in the ledger's one total order: usage rows sit at their UTC hour, so ids
# alone (creation order) would not do.
LedgerKey = tuple[datetime, str]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class LedgerFilters:
    kind: str | None = None
    since: datetime | None = None  # at or after
    until: datetime | None = None  # before


def key_of(entry: LedgerEntry) -> LedgerKey:
    return entry.created_at, entry.id


# --- cursors -------------------------------------------------------------------------------------


def encode_key(entry: LedgerEntry) -> str:
    """The cursor after `entry`: its created_at in exact microseconds and its id."""
    micros = (entry.created_at - _EPOCH) // _MICROSECOND
    return encode_cursor(f"{micros}:{entry.id}")


def decode_key(cursor: str | None) -> LedgerKey | None:
    value: str | None = decode_cursor(cursor, str)
    if value is None:
        return None
    micros, _, entry_id = value.partition(":")
    try:
        return _EPOCH + int(micros) * _MICROSECOND, entry_id
    except (ValueError, OverflowError):
        raise InvalidInput(
            "cursor: not a cursor this list returned; pass next_cursor from the previous page",
            details={"field": "cursor"},
        ) from None


# --- order ---------------------------------------------------------------------------------------
# Spelled out rather than as row values so the (org_id, created_at) index bounds the scan.


def _at_or_before(key: LedgerKey) -> ColumnElement[bool]:
    at, entry_id = key
    column = LedgerEntry.created_at
    return and_(column <= at, or_(column < at, LedgerEntry.id <= entry_id))


def _before(key: LedgerKey) -> ColumnElement[bool]:
    at, entry_id = key
    column = LedgerEntry.created_at
    return and_(column <= at, or_(column < at, LedgerEntry.id < entry_id))


def _after(key: LedgerKey) -> ColumnElement[bool]:
    at, entry_id = key
    column = LedgerEntry.created_at
    return and_(column >= at, or_(column > at, LedgerEntry.id > entry_id))


# --- rows ----------------------------------------------------------------------------------------


async def add(session: AsyncSession, entry: LedgerEntry) -> None:
    session.add(entry)
    await session.flush()


async def balance(session: AsyncSession, org_id: str) -> int:
    """sum(ledger): every entry of the org, usage debits included."""
    total = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_nusd), 0)).where(
            LedgerEntry.org_id == org_id
        )
    )
    return int(total or 0)


def _filtered(org_id: str, filters: LedgerFilters) -> Select[LedgerEntry]:
    statement = select(LedgerEntry).where(LedgerEntry.org_id == org_id)
    if filters.kind is not None:
        statement = statement.where(LedgerEntry.kind == filters.kind)
    if filters.since is not None:
        statement = statement.where(LedgerEntry.created_at >= filters.since)
    if filters.until is not None:
        statement = statement.where(LedgerEntry.created_at < filters.until)
    return statement


async def entries(
    session: AsyncSession,
    org_id: str,
    filters: LedgerFilters,
    *,
    after: LedgerKey | None,
    limit: int,
    newest_first: bool,
) -> list[LedgerEntry]:
    """Up to `limit` entries past `after` in the listing's direction."""
    statement = _filtered(org_id, filters)
    if after is not None:
        statement = statement.where(_before(after) if newest_first else _after(after))
    if newest_first:
        statement = statement.order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
    else:
        statement = statement.order_by(LedgerEntry.created_at, LedgerEntry.id)
    return list(await session.scalars(statement.limit(limit)))


async def running_balances(
    session: AsyncSession, org_id: str, page: Sequence[LedgerEntry], filters: LedgerFilters
) -> list[int]:
    """The balance after each entry of `page` (in the page's order): the sum of every entry of
    the org at or before it in (created_at, id) order, whatever the filters.

    One aggregate query: the sum up to the page's oldest entry, then each next entry adds its own
    amount. Without a kind filter nothing else lies between two entries of a page (since/until
    bound a contiguous stretch); with one, the other kinds between them are summed per gap in
    the same query (a bucket per gap)."""
    if not page:
        return []
    ascending = sorted(page, key=key_of)
    oldest, newest = key_of(ascending[0]), key_of(ascending[-1])
    gaps: list[tuple[ColumnElement[bool], int]] = [(_at_or_before(oldest), 0)]
    hidden: ColumnElement[bool] = false()
    if filters.kind is not None:
        # Gap i holds the unlisted entries between ascending[i - 1] and ascending[i].
        gaps += [(_before(key_of(entry)), i) for i, entry in enumerate(ascending[1:], 1)]
        hidden = LedgerEntry.kind != filters.kind
    bucket = case(*gaps, else_=-1).label("bucket")
    rows = (
        select(bucket, LedgerEntry.amount_nusd.label("amount"))
        .where(
            LedgerEntry.org_id == org_id,
            _at_or_before(newest),
            or_(_at_or_before(oldest), hidden),
        )
        .subquery()
    )
    totals = select(rows.c.bucket, func.sum(rows.c.amount)).group_by(rows.c.bucket)
    sums: dict[Any, Any] = {bucket: total for bucket, total in await session.execute(totals)}
    running = 0
    after: dict[str, int] = {}
    for i, entry in enumerate(ascending):
        running += int(sums.get(i) or 0) + (entry.amount_nusd if i else 0)
        after[entry.id] = running
    return [after[entry.id] for entry in page]
