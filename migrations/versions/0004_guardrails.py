"""Guardrails: budgets, policies and their bindings; hourly usage debits in the ledger (instead
of one per request); the org's prepaid-credit switch.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE = sa.text("kind = 'usage'")


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("scope_type", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("limit_nusd", sa.BigInteger(), nullable=False),
        sa.Column("enforcement", sa.String(length=8), nullable=False),
        sa.Column(
            "thresholds", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("enforcement IN ('hard', 'soft')", name=op.f("ck_budgets_enforcement")),
        sa.CheckConstraint(
            "period IN ('day', 'week', 'month', 'total')", name=op.f("ck_budgets_period")
        ),
        sa.CheckConstraint(
            "scope_type IN ('org', 'group', 'member', 'key', 'member_default')",
            name=op.f("ck_budgets_scope_type"),
        ),
        sa.CheckConstraint("limit_nusd >= 0", name=op.f("ck_budgets_limit_not_negative")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_budgets_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "org_id",
            "scope_type",
            "scope_id",
            "period",
            name=op.f("uq_budgets_org_id_scope_type_scope_id_period"),
        ),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=True),
        sa.Column(
            "allowed_models",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "blocked_models",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "ip_allowlist", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.BigInteger(), nullable=True),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_policies_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_policies_org_id_name")),
    )
    op.create_table(
        "policy_bindings",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("policy_id", sa.String(length=40), nullable=False),
        sa.Column("target_type", sa.String(length=8), nullable=False),
        sa.Column("target_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "target_type IN ('group', 'member', 'key')", name=op.f("ck_policy_bindings_target_type")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_policy_bindings_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_policy_bindings_policy_id_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_bindings")),
        sa.UniqueConstraint(
            "policy_id",
            "target_type",
            "target_id",
            name=op.f("uq_policy_bindings_policy_id_target_type_target_id"),
        ),
    )
    op.create_index(
        op.f("ix_policy_bindings_org_id_target_type_target_id"),
        "policy_bindings",
        ["org_id", "target_type", "target_id"],
        unique=False,
    )
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("period_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("requests", sa.Integer(), nullable=True))
        batch.drop_constraint(op.f("uq_ledger_entries_request_id"), type_="unique")
        batch.drop_column("request_id")
    op.create_index(
        "uq_ledger_entries_usage_hour",
        "ledger_entries",
        ["org_id", "period_start"],
        unique=True,
        postgresql_where=USAGE,
        sqlite_where=USAGE,
    )
    # NULL: not chosen yet (off until the org's first top-up turns it on).
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("credit_enforced", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("credit_enforced")
    op.drop_index("uq_ledger_entries_usage_hour", table_name="ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=40), nullable=True))
        batch.create_unique_constraint(op.f("uq_ledger_entries_request_id"), ["request_id"])
        batch.drop_column("requests")
        batch.drop_column("period_start")
    op.drop_index(
        op.f("ix_policy_bindings_org_id_target_type_target_id"), table_name="policy_bindings"
    )
    op.drop_table("policy_bindings")
    op.drop_table("policies")
    op.drop_table("budgets")
