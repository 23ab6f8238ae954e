"""Alerting: channels (secrets sealed), rules, alerts unique per dedupe key, the delivery outbox
(to a channel or to a person) and its attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_channels",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target_hint", sa.String(length=300), nullable=False),
        sa.Column("config_sealed", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("open_until", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('webhook', 'slack', 'discord', 'email')", name=op.f("ck_alert_channels_kind")
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_alert_channels_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_channels")),
    )
    op.create_index(op.f("ix_alert_channels_org_id"), "alert_channels", ["org_id"], unique=False)
    op.create_index(
        "uq_alert_channels_live_name",
        "alert_channels",
        ["org_id", "name"],
        unique=True,
        postgresql_where=sa.text("deleted_at IS NULL"),
        sqlite_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("group_id", sa.String(length=40), nullable=True),
        sa.Column(
            "fields", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "recipient_user_ids",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_alerts_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("org_id", "dedupe_key", name=op.f("uq_alerts_org_id_dedupe_key")),
    )
    op.create_index(
        op.f("ix_alerts_org_id_occurred_at"), "alerts", ["org_id", "occurred_at"], unique=False
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("channel_id", sa.String(length=40), nullable=True),
        sa.Column("recipient_user_id", sa.String(length=40), nullable=True),
        sa.Column("rule_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed', 'expired', 'cancelled')",
            name=op.f("ck_alert_deliveries_status"),
        ),
        sa.CheckConstraint(
            "(channel_id IS NULL AND recipient_user_id IS NOT NULL) OR (channel_id IS NOT NULL AND recipient_user_id IS NULL)",
            name=op.f("ck_alert_deliveries_one_target"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_deliveries_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["alert_channels.id"],
            name=op.f("fk_alert_deliveries_channel_id_alert_channels"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_alert_deliveries_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["recipient_user_id"],
            ["users.id"],
            name=op.f("fk_alert_deliveries_recipient_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
        sa.UniqueConstraint(
            "alert_id", "channel_id", name=op.f("uq_alert_deliveries_alert_id_channel_id")
        ),
        sa.UniqueConstraint(
            "alert_id",
            "recipient_user_id",
            name=op.f("uq_alert_deliveries_alert_id_recipient_user_id"),
        ),
    )
    op.create_index(
        op.f("ix_alert_deliveries_org_id_created_at"),
        "alert_deliveries",
        ["org_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_alert_deliveries_status_next_attempt_at"),
        "alert_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("scope_group_id", sa.String(length=40), nullable=True),
        sa.Column(
            "params", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "recipients", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "channel_ids", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "event IN ('budget.threshold', 'credit.low', 'anomaly.detected', 'guardrail.blocked', 'key.created', 'key.disabled', 'key.expired', 'member.joined', 'member.removed')",
            name=op.f("ck_alert_rules_event"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_alert_rules_org_id_organizations")
        ),
        sa.ForeignKeyConstraint(
            ["scope_group_id"], ["groups.id"], name=op.f("fk_alert_rules_scope_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_rules")),
    )
    op.create_index(
        op.f("ix_alert_rules_org_id_event"), "alert_rules", ["org_id", "event"], unique=False
    )
    op.create_table(
        "alert_delivery_attempts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("delivery_id", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["alert_deliveries.id"],
            name=op.f("fk_alert_delivery_attempts_delivery_id_alert_deliveries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_delivery_attempts")),
        sa.UniqueConstraint(
            "delivery_id", "attempt", name=op.f("uq_alert_delivery_attempts_delivery_id_attempt")
        ),
    )


def downgrade() -> None:
    op.drop_table("alert_delivery_attempts")
    op.drop_index(op.f("ix_alert_rules_org_id_event"), table_name="alert_rules")
    op.drop_table("alert_rules")
    op.drop_index(op.f("ix_alert_deliveries_status_next_attempt_at"), table_name="alert_deliveries")
    op.drop_index(op.f("ix_alert_deliveries_org_id_created_at"), table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index(op.f("ix_alerts_org_id_occurred_at"), table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("uq_alert_channels_live_name", table_name="alert_channels")
    op.drop_index(op.f("ix_alert_channels_org_id"), table_name="alert_channels")
    op.drop_table("alert_channels")
