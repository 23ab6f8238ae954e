"""Tables of the tenant tree: organizations, groups (nodes), memberships and role bindings."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
    or_,
    text,
)
from sqlalchemy.orm import InstrumentedAttribute, Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, UTCDateTime

ROLES = ("owner", "admin", "member", "viewer")
INVITATION_STATUSES = ("pending", "accepted", "revoked", "expired")
# Four tiers by default: org (level 0), division, team, project (level 3).
DEFAULT_MAX_LEVEL = 3
DEFAULT_TOPUP_MAX_LEVEL = 1
PATH_SEPARATOR = "/"


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    max_level: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_LEVEL)
    topup_max_level: Mapped[int] = mapped_column(Integer, default=DEFAULT_TOPUP_MAX_LEVEL)
    members_see_org_feed: Mapped[bool] = mapped_column(Boolean, default=False)
    # Prepaid: requests need available credit. Off, the ledger is still kept (and may go below
    # zero) but never blocks; budgets and rate limits apply either way. None: nobody chose yet,
    # which counts as off until the org's first top-up turns it on.
    credit_enforced: Mapped[bool | None] = mapped_column(Boolean, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Group(Base):
    """A node of an org's tree. The root has no parent and level 0.

    `path` is the chain of ids from the root down to this node, joined by '/', so a subtree is
    one indexed prefix match and the ancestors are a split away.
    """

    __tablename__ = "groups"
    __table_args__ = (
        CheckConstraint("level >= 0", name="level_not_negative"),
        # Names are unique among a node's live children; a deleted group frees its name.
        Index(
            "uq_groups_live_name",
            "org_id",
            "parent_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        Index(None, "org_id", "path"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"))
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(400))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Groups are soft-deleted: usage rows, audit events and disabled keys still name them.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def in_subtrees(
    path_column: ColumnElement[str] | InstrumentedAttribute[str], subtrees: list[str]
) -> ColumnElement[bool]:
    """Rows whose group path lies in any of the given subtrees (paths joined with '/')."""
    if not subtrees:
        return false()
    return or_(
        *(
            or_(path_column == root, path_column.startswith(root + PATH_SEPARATOR, autoescape=True))
            for root in subtrees
        )
    )


class Membership(Base):
    """A user's place in an org. Spend of the member's keys is attributed to the home group."""

    __tablename__ = "memberships"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'removed')", name="status"),
        UniqueConstraint("org_id", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    home_group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoleBinding(Base):
    """(user, node, role): the role holds at that node and, for admins, strictly below it."""

    __tablename__ = "role_bindings"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role"),
        UniqueConstraint("group_id", "user_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Invitation(Base):
    """An offer of membership: email, role and home group. Only the token's digest is stored;
    at most one invitation per email and org is pending at a time."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint("role IN ('owner', 'admin', 'member', 'viewer')", name="role"),
        CheckConstraint("status IN ('pending', 'accepted', 'revoked', 'expired')", name="status"),
        Index(
            "uq_invitations_pending_email",
            "org_id",
            "email",
            unique=True,
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    group_id: Mapped[str] = mapped_column(ForeignKey("groups.id"))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    invited_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    accepted_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
