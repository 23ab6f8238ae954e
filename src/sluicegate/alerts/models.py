"""Tables of alerting: channels (where alerts go, their secrets sealed), rules (which events, for
which scope, to whom), alerts (one row per occurrence, unique per dedupe key so an event fires
once) and the outbox of deliveries with every attempt made."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.clock import utcnow
from sluicegate.core.db import Base, JSONType, UTCDateTime

CHANNEL_KINDS = ("webhook", "slack", "discord", "email")
EVENTS = (
    "budget.threshold",
    "credit.low",
    "anomaly.detected",
    "guardrail.blocked",
    "key.created",
    "key.disabled",
    "key.expired",
    "member.joined",
    "member.removed",
    "audit.checkpoint",
)
DELIVERY_STATUSES = ("pending", "delivered", "failed", "expired", "cancelled")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class AlertChannel(Base):
    """A destination of one org. `config_sealed` holds the URL and signing secrets (or mail
    addresses) encrypted with the instance key; `target_hint` is what may be shown (scheme and
    host), since a Slack or Discord webhook URL is itself a credential."""

    __tablename__ = "alert_channels"
    __table_args__ = (
        CheckConstraint(_in("kind", CHANNEL_KINDS), name="kind"),
        Index(None, "org_id"),
        # Names are unique among the org's live channels; a deleted channel frees its name.
        Index(
            "uq_alert_channels_live_name",
            "org_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    target_hint: Mapped[str] = mapped_column(String(300))
    config_sealed: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The endpoint's circuit breaker, shared by every delivery worker: consecutive failures,
    # and while open, no attempt before `open_until`.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    open_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertRule(Base):
    """Which event, in which part of the org, reaches whom. `scope_group_id` null: the whole
    org. `params` are the event's own settings (see alerts/schemas.py); `recipients` names the
    people ({"key_owner", "scope_admins", "user_ids"}); `channel_ids` the channels."""

    __tablename__ = "alert_rules"
    __table_args__ = (
        CheckConstraint(_in("event", EVENTS), name="event"),
        Index(None, "org_id", "event"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(200))
    event: Mapped[str] = mapped_column(String(32))
    scope_group_id: Mapped[str | None] = mapped_column(ForeignKey("groups.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    recipients: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    channel_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Alert(Base):
    """One occurrence of an event. (org, dedupe_key) is unique: a budget threshold's key names
    the budget, its period and the percentage, so it fires once per period whatever the
    concurrency or redelivery."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("org_id", "dedupe_key"),
        Index(None, "org_id", "occurred_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    event: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    text: Mapped[str] = mapped_column(Text)
    # The node the event happened at (its readers: those who read that node), null: the org.
    group_id: Mapped[str | None] = mapped_column(String(40))
    fields: Mapped[list[list[str]]] = mapped_column(JSONType, default=list)
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The people the matching rules named (key owner, scope admins, named users), as user ids.
    recipient_user_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AlertDelivery(Base):
    """The outbox: one row per (alert, channel) and per (alert, person), worked by the delivery
    worker until delivered, failed for good, or too old. A person's row (`recipient_user_id`)
    is mailed to the user's address of the moment. A worker claims a row by setting
    `claimed_until` (a lease), so a worker that dies mid-send leaves it to be retried once the
    lease runs out."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        # A delivery goes to a channel or to a person, never both, never neither.
        CheckConstraint(
            "(channel_id IS NULL AND recipient_user_id IS NOT NULL) OR "
            "(channel_id IS NOT NULL AND recipient_user_id IS NULL)",
            name="one_target",
        ),
        UniqueConstraint("alert_id", "channel_id"),
        UniqueConstraint("alert_id", "recipient_user_id"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "org_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"))
    channel_id: Mapped[str | None] = mapped_column(ForeignKey("alert_channels.id"))
    recipient_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    rule_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AlertAttempt(Base):
    """One try of one delivery, for the delivery log."""

    __tablename__ = "alert_delivery_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("alert_deliveries.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    # delivered | retry (will try again) | failed (given up) | expired
    outcome: Mapped[str] = mapped_column(String(16))
