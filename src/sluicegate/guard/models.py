"""Tables of the guardrails: budgets on scopes, and reusable policies bound to groups, members or
keys. Counters live in the counter store (Redis or in-process); these rows are their rules."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, JSONType, UTCDateTime


class Budget(Base):
    """A spend cap on one scope for one kind of period; (scope, period) is its identity, so a
    PUT with the same scope and period replaces the limit and keeps what was spent."""

    # scope_type `member_default`: the org-wide budget of every member without one of their own
    # (per period).
    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint(
            "scope_type IN ('org', 'group', 'member', 'key', 'member_default')", name="scope_type"
        ),
        CheckConstraint("period IN ('day', 'week', 'month', 'total')", name="period"),
        CheckConstraint("enforcement IN ('hard', 'soft')", name="enforcement"),
        CheckConstraint("limit_nusd >= 0", name="limit_not_negative"),
        UniqueConstraint("org_id", "scope_type", "scope_id", "period"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    scope_type: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(8))
    limit_nusd: Mapped[int] = mapped_column(BigInteger)
    enforcement: Mapped[str] = mapped_column(String(8), default="hard")
    # Percentages of the limit at which alerts fire, ascending.
    thresholds: Mapped[list[int]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Policy(Base):
    """A reusable guardrail set. Null means "no rule of this kind"; bound along a key's chain,
    every bound policy applies and the most restrictive answer wins."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(1000))
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType)
    blocked_models: Mapped[list[str] | None] = mapped_column(JSONType)
    ip_allowlist: Mapped[list[str] | None] = mapped_column(JSONType)
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(BigInteger)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PolicyBinding(Base):
    """A policy applied to a group (and so to every key below it), a member, or a key."""

    __tablename__ = "policy_bindings"
    __table_args__ = (
        CheckConstraint("target_type IN ('group', 'member', 'key')", name="target_type"),
        UniqueConstraint("policy_id", "target_type", "target_id"),
        Index(None, "org_id", "target_type", "target_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    policy_id: Mapped[str] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    target_type: Mapped[str] = mapped_column(String(8))
    target_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
