"""Audit tables: the events, and each chain's head (the row writers lock to append).

There is one chain per organization (`org_id` is the org's id) and one platform chain for
identity events that belong to no org (`org_id` is PLATFORM_CHAIN). No foreign key on
`org_id`, so that the platform chain needs no org row and the trail outlives anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, SmallInteger, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.db import Base, JSONType, UTCDateTime

# The chain of identity events (logins, personal tokens, freezes) that belong to no org.
PLATFORM_CHAIN = "platform"


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("org_id", "seq"),
        Index(None, "org_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    # Position in the org's chain, from 1, without gaps.
    seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_user_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(40))
    # The node the target belongs to, so admins and viewers see the events of their subtree.
    group_id: Mapped[str | None] = mapped_column(String(40))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    request_id: Mapped[str | None] = mapped_column(String(128))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # How `hash` links (audit/chain.py): 1 unkeyed SHA-256 (events before keyed links), 2 HMAC.
    hash_version: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))


class AuditHead(Base):
    """The last link of an org's chain. Appending locks this row, so concurrent writers queue
    and the chain stays a single line. `mac` seals (seq, hash) under the audit key."""

    __tablename__ = "audit_heads"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64))
