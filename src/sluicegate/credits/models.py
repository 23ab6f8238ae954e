"""The ledger: every change to an org's credit pool is one signed row; balance = sum(amount)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, UTCDateTime

LEDGER_KINDS = ("topup", "usage", "adjustment", "refund")


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("kind IN ('topup', 'usage', 'adjustment', 'refund')", name="kind"),
        Index(None, "org_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # Signed nano-USD: top-ups and refunds positive, usage debits negative.
    amount_nusd: Mapped[int] = mapped_column(BigInteger)
    # A usage debit names its request, so a retried settle cannot debit twice.
    request_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    actor_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
