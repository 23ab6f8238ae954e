"""What the database holds of an org's usage, read four ways that must agree: the usage rows,
the 15-minute rollups, the daily rollups and the ledger's usage debits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class Books:
    request_ids: frozenset[str]
    rows: int
    cost_nusd: int
    quarter_requests: int
    quarter_cost_nusd: int
    daily_requests: int
    daily_cost_nusd: int
    debit_nusd: int
    debit_requests: int

    def assert_consistent(self) -> None:
        """Every row counted once in each rollup and in the ledger."""
        assert self.rows == len(self.request_ids)
        assert (self.quarter_requests, self.quarter_cost_nusd) == (self.rows, self.cost_nusd)
        assert (self.daily_requests, self.daily_cost_nusd) == (self.rows, self.cost_nusd)
        assert self.debit_nusd == -self.cost_nusd


async def read_books(session: AsyncSession, org_id: str) -> Books:
    values = {"org": org_id}
    ids = (
        await session.scalars(
            text("SELECT request_id FROM usage_events WHERE org_id = :org"), values
        )
    ).all()
    rows, cost = (
        await session.execute(
            text(
                "SELECT count(*), coalesce(sum(cost_nusd), 0) FROM usage_events WHERE org_id = :org"
            ),
            values,
        )
    ).one()
    quarter = (
        await session.execute(
            text(
                "SELECT coalesce(sum(requests), 0), coalesce(sum(cost_nusd), 0) "
                "FROM usage_rollups WHERE org_id = :org"
            ),
            values,
        )
    ).one()
    daily = (
        await session.execute(
            text(
                "SELECT coalesce(sum(requests), 0), coalesce(sum(cost_nusd), 0) "
                "FROM usage_daily_rollups WHERE org_id = :org"
            ),
            values,
        )
    ).one()
    debits = (
        await session.execute(
            text(
                "SELECT coalesce(sum(amount_nusd), 0), coalesce(sum(requests), 0) "
                "FROM ledger_entries WHERE org_id = :org AND kind = 'usage'"
            ),
            values,
        )
    ).one()
    return Books(
        frozenset(ids),
        int(rows),
        int(cost),
        int(quarter[0]),
        int(quarter[1]),
        int(daily[0]),
        int(daily[1]),
        int(debits[0]),
        int(debits[1]),
    )
