"""The credit ledger's table: every change to an org's credit pool is one signed row, and
balance = sum(amount). Top-ups, adjustments and the balance are the credits capability's
(credits/service.py); the table lives here, beside the usage rows, because the usage debits are
written with them, in one transaction (metering/writer.py `store_usage`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import Executable

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, UTCDateTime, dialect_insert
from sluicegate.core.ids import new_id

LEDGER_KINDS = ("topup", "usage", "adjustment", "refund")
USAGE = text("kind = 'usage'")


class LedgerEntry(Base):
    """Top-ups, adjustments and refunds are one row each. Usage debits are one row per org and
    UTC hour (`period_start`), grown by the usage writer in the same transaction that stores the
    usage events, so sum(usage debits) == sum(usage cost) exactly and the ledger stays readable."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('topup', 'usage', 'adjustment', 'refund')", name="kind"),
        Index(None, "org_id", "created_at"),
        Index(
            "uq_ledger_entries_usage_hour",
            "org_id",
            "period_start",
            unique=True,
            postgresql_where=USAGE,
            sqlite_where=USAGE,
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # Signed nano-USD: top-ups and refunds positive, usage debits negative.
    amount_nusd: Mapped[int] = mapped_column(BigInteger)
    # Usage debits: the UTC hour they cover and how many billed requests they add up.
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    requests: Mapped[int | None] = mapped_column(Integer)
    actor_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def hourly_debits(stored: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One ledger debit per (org, UTC hour) of the newly stored rows that cost something, in
    (org, hour) order: concurrent writers lock the ledger rows in the same order, so never
    deadlock."""
    sums: dict[tuple[str, datetime], list[int]] = {}
    for row in stored:
        org_id, created_at, cost = row["org_id"], row["created_at"], row["cost_nusd"]
        if not cost:
            continue
        hour = created_at.replace(minute=0, second=0, microsecond=0)
        total = sums.setdefault((org_id, hour), [0, 0])
        total[0] += cost
        total[1] += 1
    return [
        {
            "id": new_id("led"),
            "org_id": org_id,
            "kind": "usage",
            "amount_nusd": -cost,
            "period_start": hour,
            "requests": requests,
            "created_at": hour,
        }
        for (org_id, hour), (cost, requests) in sorted(sums.items())
    ]


def debit_upsert(dialect: str) -> Executable:
    """Grow the (org, hour) usage debit in place, creating it for the hour's first cost."""
    statement = dialect_insert(dialect)(LedgerEntry)
    upsert: Executable = statement.on_conflict_do_update(
        index_elements=["org_id", "period_start"],
        index_where=USAGE,
        set_={
            "amount_nusd": LedgerEntry.amount_nusd + statement.excluded.amount_nusd,
            "requests": LedgerEntry.requests + statement.excluded.requests,
        },
    )
    return upsert
