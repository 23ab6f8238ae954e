"""Reconciling what is derived from the usage rows with the rows themselves: the ledger's hourly
usage debits, the 15-minute rollups, the daily rollups in the org's timezone and the org-wide
daily rollups are recomputed from the usage rows by the same functions the writers use
(metering/ledger.py `hourly_debits`, metering/rollups.py `rollup_rows`) and compared row by row
and measure by measure. `repair_org` rebuilds them from the usage rows in one transaction that
holds the org's row locked, so no usage batch lands in between.

A window starts at `since` (midnight UTC): quarters and hours from it; days in the org's zone
from the first whole day after it. Rows older than the usage retention are gone, so nothing
before it can be checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.ids import new_id
from sluicegate.core.money import nanos_to_usd
from sluicegate.metering.ledger import LedgerEntry, hourly_debits
from sluicegate.metering.models import (
    UsageDailyRollup,
    UsageEvent,
    UsageOrgDailyRollup,
    UsageRollup,
)
from sluicegate.metering.rollups import (
    DAY_NAMES,
    EVENT_COLUMNS,
    MEASURES,
    ORG_DAY_NAMES,
    QUARTER_NAMES,
    local_day,
    rollup_rows,
)
from sluicegate.metering.writer import org_timezones

# Usage rows read per round trip; mismatches kept per comparison (the first few name the rest).
READ_BATCH = 5000
MAX_REPORTED = 20

Key = tuple[Any, ...]
Sums = dict[Key, tuple[int, ...]]


@dataclass
class Comparison:
    """One derived table against what the usage rows say it must hold."""

    what: str
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    differing: int = 0  # rows that differ, all of them (mismatches lists the first few)

    @property
    def ok(self) -> bool:
        return self.differing == 0

    def differ(self, line: str) -> None:
        self.differing += 1
        if len(self.mismatches) < MAX_REPORTED:
            self.mismatches.append(line)


@dataclass
class Expected:
    """The derived rows of an org's window, recomputed from its usage rows."""

    rows: int = 0
    cost: int = 0
    debits: Sums = field(default_factory=dict)  # (org, hour) -> (amount, requests)
    quarters: Sums = field(default_factory=dict)
    days: Sums = field(default_factory=dict)
    org_days: Sums = field(default_factory=dict)


@dataclass
class Window:
    org_id: str
    zone: str
    since: datetime | None  # midnight UTC, or None: all time
    first_day: date | None  # the first whole local day from `since`

    @classmethod
    def of(cls, org_id: str, zone: str, since: datetime | None) -> Window:
        if since is None:
            return cls(org_id, zone, None, None)
        day = local_day(since, zone)
        if datetime.combine(day, time(), ZoneInfo(zone)) < since:
            day += timedelta(days=1)
        return cls(org_id, zone, since, day)


@dataclass
class OrgReport:
    window: Window
    expected: Expected
    comparisons: list[Comparison]

    @property
    def first_mismatch(self) -> str | None:
        for comparison in self.comparisons:
            if comparison.mismatches:
                return f"{comparison.what}: {comparison.mismatches[0]}"
        return None


async def window_of(session: AsyncSession, org_id: str, since: datetime | None) -> Window | None:
    """The org's window, None for an org that does not exist."""
    zones = await org_timezones(session, {org_id})
    if org_id not in zones:
        return None
    return Window.of(org_id, zones[org_id], since)


async def expected_of(session: AsyncSession, window: Window) -> Expected:
    """Every derived row of the window, summed from the usage rows as the writers sum them."""
    statement = select(*(getattr(UsageEvent, name) for name in ("request_id", *EVENT_COLUMNS)))
    statement = statement.where(UsageEvent.org_id == window.org_id)
    if window.since is not None:
        statement = statement.where(UsageEvent.created_at >= window.since)
    expected = Expected()
    zones = {window.org_id: window.zone}
    result = await session.stream(statement.execution_options(yield_per=READ_BATCH))
    async for partition in result.mappings().partitions(READ_BATCH):
        batch = [dict(row) for row in partition]
        expected.rows += len(batch)
        expected.cost += sum(row["cost_nusd"] or 0 for row in batch)
        for debit in hourly_debits(batch):
            _add(
                expected.debits,
                (debit["period_start"],),
                (-debit["amount_nusd"], debit["requests"]),
            )
        rollups = rollup_rows(batch, zones)
        _merge(expected.quarters, rollups.quarters, QUARTER_NAMES)
        _merge(expected.days, _whole_days(rollups.days, window), DAY_NAMES)
        _merge(expected.org_days, _whole_days(rollups.org_days, window), ORG_DAY_NAMES)
    return expected


def _whole_days(rows: Iterable[dict[str, Any]], window: Window) -> list[dict[str, Any]]:
    if window.first_day is None:
        return list(rows)
    return [row for row in rows if row["day"] >= window.first_day]


def _add(sums: Sums, key: Key, values: tuple[int, ...]) -> None:
    held = sums.get(key)
    sums[key] = values if held is None else tuple(a + b for a, b in zip(held, values, strict=True))


def _merge(sums: Sums, rows: Iterable[Mapping[str, Any]], names: tuple[str, ...]) -> None:
    keys = [name for name in names if name not in MEASURES]
    for row in rows:
        _add(sums, tuple(row[name] for name in keys), tuple(row[name] for name in MEASURES))


async def compare(session: AsyncSession, window: Window, expected: Expected) -> list[Comparison]:
    """The derived tables of the window against `expected`."""
    org = window.org_id
    debit_rows = await session.execute(
        select(LedgerEntry.period_start, LedgerEntry.amount_nusd, LedgerEntry.requests).where(
            LedgerEntry.org_id == org,
            LedgerEntry.kind == "usage",
            *(() if window.since is None else (LedgerEntry.period_start >= window.since,)),
        )
    )
    debits: Sums = {}
    for hour, amount, requests in debit_rows:
        _add(debits, (hour,), (-amount, requests or 0))
    comparisons = [
        _compared("ledger usage debits (USD, requests per UTC hour)", expected.debits, debits),
        _compared(
            "15-minute rollups (usage_rollups)",
            expected.quarters,
            await _actual(session, UsageRollup, QUARTER_NAMES, window, "bucket_start"),
        ),
        _compared(
            f"daily rollups in {window.zone} (usage_daily_rollups)",
            expected.days,
            await _actual(session, UsageDailyRollup, DAY_NAMES, window, "day"),
        ),
        _compared(
            "org-wide daily rollups (usage_org_daily_rollups)",
            expected.org_days,
            await _actual(session, UsageOrgDailyRollup, ORG_DAY_NAMES, window, "day"),
        ),
    ]
    return comparisons


async def _actual(
    session: AsyncSession, model: Any, names: tuple[str, ...], window: Window, time_column: str
) -> Sums:
    table: Table = model.__table__
    statement = select(*(table.c[name] for name in names)).where(table.c.org_id == window.org_id)
    start = window.since if time_column == "bucket_start" else window.first_day
    if start is not None:
        statement = statement.where(table.c[time_column] >= start)
    sums: Sums = {}
    _merge(sums, (dict(row) for row in (await session.execute(statement)).mappings()), names)
    return sums


def _compared(what: str, expected: Sums, actual: Sums) -> Comparison:
    comparison = Comparison(what, checked=len(expected.keys() | actual.keys()))
    for key in sorted(expected.keys() | actual.keys(), key=_sortable):
        want, have = expected.get(key), actual.get(key)
        if want == have:
            continue
        name = ", ".join(_shown(part) for part in key)
        if have is None:
            comparison.differ(f"row ({name}) is missing")
        elif want is None:
            comparison.differ(f"row ({name}) has no usage rows behind it: {_values(what, have)}")
        else:
            comparison.differ(
                f"row ({name}) holds {_values(what, have)}, its usage rows sum to "
                f"{_values(what, want)}"
            )
    return comparison


def _values(what: str, values: tuple[int, ...]) -> str:
    if what.startswith("ledger"):
        return f"{nanos_to_usd(values[0])} USD over {values[1]} requests"
    return ", ".join(f"{name} {value}" for name, value in zip(MEASURES, values, strict=True))


def _shown(part: Any) -> str:
    if isinstance(part, datetime):
        return part.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
    return str(part) if part != "" else "''"


def _sortable(key: Key) -> tuple[str, ...]:
    return tuple(_shown(part) for part in key)


# --- repair ----------------------------------------------------------------------------------


async def repair_org(session: AsyncSession, window: Window) -> Expected:
    """Rebuild the window's derived rows from the usage rows, in the caller's transaction, the
    org's row locked first (Postgres), so no usage batch is stored meanwhile (store_usage reads
    it FOR SHARE)."""
    await _lock_org(session, window.org_id)
    expected = await expected_of(session, window)
    org = window.org_id
    since_clause = () if window.since is None else (LedgerEntry.period_start >= window.since,)
    await session.execute(
        delete(LedgerEntry).where(
            LedgerEntry.org_id == org, LedgerEntry.kind == "usage", *since_clause
        )
    )
    debits = [
        {
            "id": new_id("led"),
            "org_id": org,
            "kind": "usage",
            "amount_nusd": -amount,
            "period_start": hour,
            "requests": requests,
            "created_at": hour,
        }
        for (hour,), (amount, requests) in sorted(expected.debits.items())
        if amount
    ]
    if debits:
        await session.execute(insert(LedgerEntry), debits)
    derived: tuple[tuple[Any, tuple[str, ...], str, Any, Sums], ...] = (
        (UsageRollup, QUARTER_NAMES, "bucket_start", window.since, expected.quarters),
        (UsageDailyRollup, DAY_NAMES, "day", window.first_day, expected.days),
        (UsageOrgDailyRollup, ORG_DAY_NAMES, "day", window.first_day, expected.org_days),
    )
    for model, names, time_column, start, sums in derived:
        table: Table = model.__table__
        condition = [table.c.org_id == org]
        if start is not None:
            condition.append(table.c[time_column] >= start)
        await session.execute(delete(table).where(*condition))
        rows = _rows(names, sums)
        if rows:
            await session.execute(table.insert(), rows)
    return expected


def _rows(names: Sequence[str], sums: Sums) -> list[dict[str, Any]]:
    keys = [name for name in names if name not in MEASURES]
    return [
        {**dict(zip(keys, key, strict=True)), **dict(zip(MEASURES, values, strict=True))}
        for key, values in sorted(sums.items(), key=lambda item: _sortable(item[0]))
    ]


async def _lock_org(session: AsyncSession, org_id: str) -> None:
    from sluicegate.orgs.models import Organization

    statement = select(Organization.id).where(Organization.id == org_id)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    await session.execute(statement)
