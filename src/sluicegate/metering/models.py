"""The usage event table: one row per proxied request, metadata only (never content)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sluicegate.core.db import Base, JSONType, UTCDateTime
from sluicegate.metering.event import DEPLOYMENT_LENGTH


class UsageEvent(Base):
    """No foreign keys on purpose: rows outlive keys and members, and inserts stay cheap.

    On Postgres the table is partitioned by month of `created_at` (metering/partitions.py), which
    is why the time is part of the key: a unique key of a partitioned table must hold the
    partition column. A request's time never changes, so (request_id, created_at) is as unique
    as the request id, and a redelivered event conflicts with its stored row.
    The indexes serve the activity feed, newest first, for the org, a member or a key."""

    __tablename__ = "usage_events"
    __table_args__ = (
        Index(None, "org_id", "created_at", "request_id"),
        Index(None, "org_id", "user_id", "created_at"),
        Index(None, "org_id", "key_id", "created_at"),
    )

    request_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    org_id: Mapped[str] = mapped_column(String(40))
    group_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(40))
    requested_model: Mapped[str] = mapped_column(String(200))
    served_model: Mapped[str | None] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(100))
    app: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_nusd: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    usage_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    routing: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


# Every dimension of a rollup row is part of its key; absent provider, app or deployment is ''
# (not NULL) so that the key is unique on both backends. `deployment` is the deployment that
# served (the usage event's routing, metering/event.py `deployment_of`).
ROLLUP_DIMENSIONS = ("group_id", "key_id", "user_id", "model", "provider", "app", "deployment")


class _RollupMeasures:
    """The sums a rollup row holds: everything analytics shows is a sum or a ratio of sums, so
    rollups add up exactly across buckets and dimensions."""

    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)  # failed, not blocked
    blocked: Mapped[int] = mapped_column(BigInteger, default=0)  # stopped by a guardrail
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nusd: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    ttft_ms_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    ttft_count: Mapped[int] = mapped_column(BigInteger, default=0)


class UsageRollup(_RollupMeasures, Base):
    """15-minute UTC buckets of usage events. Every real UTC offset is a multiple of 15 minutes,
    so any IANA zone's days, weeks and months are exact unions of these buckets."""

    __tablename__ = "usage_rollups"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    app: Mapped[str] = mapped_column(String(200), primary_key=True)
    deployment: Mapped[str] = mapped_column(
        String(DEPLOYMENT_LENGTH), primary_key=True, server_default=""
    )


class UsageDailyRollup(_RollupMeasures, Base):
    """The same sums per calendar day in the org's own timezone (`zone`, the org's timezone when
    the row was written). Long ranges in the org's zone read these (a year is ~365 rows per
    dimension combination instead of ~35,000); any other zone or an hourly view reads the
    15-minute buckets. Written in the same transaction as the 15-minute rows; rebuilt from them
    when the org's timezone changes."""

    __tablename__ = "usage_daily_rollups"

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    group_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(100), primary_key=True)
    app: Mapped[str] = mapped_column(String(200), primary_key=True)
    deployment: Mapped[str] = mapped_column(
        String(DEPLOYMENT_LENGTH), primary_key=True, server_default=""
    )


# The dimensions the org-wide daily rollups sum by, one at a time (the key is left out: an org can
# have thousands of keys, and a (day, key) row is nearly a daily rollup row).
ORG_DIMENSIONS = ("model", "group_id", "user_id", "provider", "app", "deployment")


class UsageOrgDailyRollup(_RollupMeasures, Base):
    """The daily rollups summed over all but one dimension: per day and model, per day and
    member, and so on (`dimension` names the column, `value` holds its value), so each dimension's
    rows add up to the org's whole usage. The views of the whole org without a filter read these
    (a year by model is ~7,000 rows, against ~120,000 daily rollup rows for a large org). Written
    with the daily rollups, rebuilt with them when the org's timezone changes.

    The second index (by value, then day) lets a count of the values with usage in a window
    probe each value once instead of reading every (day, value) row."""

    __tablename__ = "usage_org_daily_rollups"
    __table_args__ = (Index(None, "org_id", "zone", "dimension", "value", "day"),)

    org_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
