"""The table of per-group routing overrides: one row per group that sets any routing field; a
null column leaves that field to the groups above."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, JSONType, UTCDateTime
from sluicegate.routing.overrides import OVERRIDE_FIELDS, RoutingOverride, override_from

COST_ACTIONS = ("refuse", "cheaper")


class RoutingOverrideRow(Base):
    """A group's routing override as stored. Lists are JSON arrays; the policies and
    certifications are stored in the order DATA_POLICIES and CERTIFICATIONS list them."""

    __tablename__ = "routing_overrides"
    __table_args__ = (
        CheckConstraint(
            "on_cost_exceeded IS NULL OR on_cost_exceeded IN ('refuse', 'cheaper')",
            name="on_cost_exceeded",
        ),
        CheckConstraint(
            "max_cost_per_request_nusd IS NULL OR max_cost_per_request_nusd > 0",
            name="max_cost_positive",
        ),
        Index(None, "org_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"), unique=True)
    provider_order: Mapped[list[str] | None] = mapped_column(JSONType)
    allowed_providers: Mapped[list[str] | None] = mapped_column(JSONType)
    ignored_providers: Mapped[list[str] | None] = mapped_column(JSONType)
    required_policies: Mapped[list[str] | None] = mapped_column(JSONType)
    required_certifications: Mapped[list[str] | None] = mapped_column(JSONType)
    allowed_regions: Mapped[list[str] | None] = mapped_column(JSONType)
    fallbacks: Mapped[list[str] | None] = mapped_column(JSONType)
    max_cost_per_request_nusd: Mapped[int | None] = mapped_column(BigInteger)
    on_cost_exceeded: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(40))

    def as_override(self) -> RoutingOverride:
        """The row as the routing code reads it (its columns are the override's fields; the
        table's check constraint holds on_cost_exceeded to the actions)."""
        return override_from({name: getattr(self, name) for name in OVERRIDE_FIELDS})
