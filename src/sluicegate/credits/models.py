"""The ledger: every change to an org's credit pool is one signed row; balance = sum(amount)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, UTCDateTime

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
