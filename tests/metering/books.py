"""What the database holds of an org's usage, read five ways that must agree: the usage rows,
the 15-minute rollups, the daily rollups, the org-wide daily rollups (each dimension of them) and
the ledger's usage debits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.metering.models import ORG_DIMENSIONS


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
    # (requests, cost) of the org-wide daily rows of each dimension
    org_daily: tuple[tuple[str, int, int], ...] = ()

    def assert_consistent(self) -> None:
        """Every row counted once in each rollup and in the ledger."""
        assert self.rows == len(self.request_ids)
        assert (self.quarter_requests, self.quarter_cost_nusd) == (self.rows, self.cost_nusd)
        assert (self.daily_requests, self.daily_cost_nusd) == (self.rows, self.cost_nusd)
        assert self.debit_nusd == -self.cost_nusd
        expected = tuple((name, self.rows, self.cost_nusd) for name in ORG_DIMENSIONS)
        assert self.org_daily == (expected if self.rows else ())


async def read_books(session: AsyncSession, org_id: str) -> Books:
    """The books as of one moment: on Postgres the reads share one snapshot when the session has
    not begun a transaction yet (else a row stored between two of them, by the drain working
    meanwhile, would show in one reading and not in another)."""
    if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
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
    per_dimension = {
        name: (int(requests), int(cost))
        for name, requests, cost in await session.execute(
            text(
                "SELECT dimension, sum(requests), sum(cost_nusd) "
                "FROM usage_org_daily_rollups WHERE org_id = :org GROUP BY dimension"
            ),
            values,
        )
    }
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
        tuple((name, *per_dimension[name]) for name in ORG_DIMENSIONS if name in per_dimension),
    )
