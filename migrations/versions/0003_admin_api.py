"""Admin API: invitations, soft-deleted groups, key rotation with a grace period, audit events
placed on a node, and a platform audit chain (no foreign key from the trail to organizations).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = sa.text("deleted_at IS NULL")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_groups_org_id_parent_id_name", type_="unique")
    op.create_index(
        "uq_groups_live_name",
        "groups",
        ["org_id", "parent_id", "name"],
        unique=True,
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("previous_digest", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("previous_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.create_unique_constraint(op.f("uq_api_keys_previous_digest"), ["previous_digest"])

    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("group_id", sa.String(length=40), nullable=True))
        batch.drop_constraint("fk_audit_events_org_id_organizations", type_="foreignkey")
    with op.batch_alter_table("audit_heads") as batch:
        batch.drop_constraint("fk_audit_heads_org_id_organizations", type_="foreignkey")

    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("group_id", sa.String(length=40), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("invited_by_user_id", sa.String(length=40), nullable=True),
        sa.Column("accepted_user_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'member', 'viewer')", name=op.f("ck_invitations_role")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'accepted', 'revoked', 'expired')",
            name=op.f("ck_invitations_status"),
        ),
        sa.ForeignKeyConstraint(
            ["accepted_user_id"], ["users.id"], name=op.f("fk_invitations_accepted_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name=op.f("fk_invitations_group_id_groups")
        ),
        sa.ForeignKeyConstraint(
            ["invited_by_user_id"],
            ["users.id"],
            name=op.f("fk_invitations_invited_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_invitations_org_id_organizations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("digest", name=op.f("uq_invitations_digest")),
    )
    op.create_index(
        "uq_invitations_pending_email",
        "invitations",
        ["org_id", "email"],
        unique=True,
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("uq_invitations_pending_email", table_name="invitations")
    op.drop_table("invitations")

    with op.batch_alter_table("audit_heads") as batch:
        batch.create_foreign_key(
            "fk_audit_heads_org_id_organizations", "organizations", ["org_id"], ["id"]
        )
    # Platform-chain events name no organization; they cannot survive the foreign key.
    op.execute("DELETE FROM audit_events WHERE org_id NOT IN (SELECT id FROM organizations)")
    op.execute("DELETE FROM audit_heads WHERE org_id NOT IN (SELECT id FROM organizations)")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("group_id")
        batch.create_foreign_key(
            "fk_audit_events_org_id_organizations", "organizations", ["org_id"], ["id"]
        )

    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("uq_api_keys_previous_digest"), type_="unique")
        batch.drop_column("previous_expires_at")
        batch.drop_column("previous_digest")

    op.drop_index("uq_groups_live_name", table_name="groups")
    with op.batch_alter_table("groups") as batch:
        batch.create_unique_constraint(
            "uq_groups_org_id_parent_id_name", ["org_id", "parent_id", "name"]
        )
        batch.drop_column("deleted_at")
