"""Org-wide daily rollups: the daily rollups summed per (day, one dimension), for the views of a
whole org without a filter; backfilled from the daily rollups already stored.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIMENSIONS = ("model", "group_id", "user_id", "provider", "app")
MEASURES = (
    "requests",
    "errors",
    "blocked",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nusd",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
)


def upgrade() -> None:
    op.create_table(
        "usage_org_daily_rollups",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in MEASURES),
        sa.PrimaryKeyConstraint(
            "org_id", "zone", "dimension", "day", "value", name=op.f("pk_usage_org_daily_rollups")
        ),
    )
    op.create_index(
        op.f("ix_usage_org_daily_rollups_org_id_zone_dimension_value_day"),
        "usage_org_daily_rollups",
        ["org_id", "zone", "dimension", "value", "day"],
    )
    measures = ", ".join(MEASURES)
    sums = ", ".join(f"sum({name})" for name in MEASURES)
    for name in DIMENSIONS:
        # Constants only: the dimension names above.
        op.execute(
            f"INSERT INTO usage_org_daily_rollups (org_id, zone, dimension, day, value, {measures}) "  # noqa: S608
            f"SELECT org_id, zone, '{name}', day, {name}, {sums} FROM usage_daily_rollups "
            f"GROUP BY org_id, zone, day, {name}"
        )


def downgrade() -> None:
    op.drop_table("usage_org_daily_rollups")
