"""Routing overrides: one row per group that sets any of its routing fields (provider order,
allowed and ignored providers, required data policies and certifications, allowed regions,
fallback models, a per-request cost ceiling and what to do beyond it); a null column is left to
the groups above.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIST_COLUMNS = (
    "provider_order",
    "allowed_providers",
    "ignored_providers",
    "required_policies",
    "required_certifications",
    "allowed_regions",
    "fallbacks",
)


def upgrade() -> None:
    op.create_table(
        "routing_overrides",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("group_id", sa.String(length=40), nullable=False),
        *(
            sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True)
            for name in LIST_COLUMNS
        ),
        sa.Column("max_cost_per_request_nusd", sa.BigInteger(), nullable=True),
        sa.Column("on_cost_exceeded", sa.String(length=8), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.CheckConstraint(
            "on_cost_exceeded IS NULL OR on_cost_exceeded IN ('refuse', 'cheaper')",
            name=op.f("ck_routing_overrides_on_cost_exceeded"),
        ),
        sa.CheckConstraint(
            "max_cost_per_request_nusd IS NULL OR max_cost_per_request_nusd > 0",
            name=op.f("ck_routing_overrides_max_cost_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_routing_overrides_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organizations.id"],
            name=op.f("fk_routing_overrides_org_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_overrides")),
        sa.UniqueConstraint("group_id", name=op.f("uq_routing_overrides_group_id")),
    )
    op.create_index(
        op.f("ix_routing_overrides_org_id"), "routing_overrides", ["org_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_routing_overrides_org_id"), table_name="routing_overrides")
    op.drop_table("routing_overrides")
