"""Durable metering: usage rollups (15-minute UTC buckets and days in the org's timezone), built
from the usage rows already stored; on Postgres the usage table becomes partitioned by month,
keyed by (request_id, created_at), with indexes for the activity feed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTITION_PREFIX = "usage_events_p"
BACKFILL_CHUNK = 20_000
DIMENSIONS = ("group_id", "key_id", "user_id", "model", "provider", "app")
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
EVENT_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("request_id", sa.String(length=40), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("org_id", sa.String(length=40), nullable=False),
    sa.Column("group_id", sa.String(length=40), nullable=False),
    sa.Column("key_id", sa.String(length=40), nullable=False),
    sa.Column("user_id", sa.String(length=40), nullable=False),
    sa.Column("requested_model", sa.String(length=200), nullable=False),
    sa.Column("served_model", sa.String(length=200), nullable=True),
    sa.Column("provider", sa.String(length=100), nullable=True),
    sa.Column("app", sa.String(length=200), nullable=True),
    sa.Column("prompt_tokens", sa.Integer(), nullable=False),
    sa.Column("completion_tokens", sa.Integer(), nullable=False),
    sa.Column("cached_tokens", sa.Integer(), nullable=False),
    sa.Column("cost_nusd", sa.BigInteger(), nullable=False),
    sa.Column("latency_ms", sa.Integer(), nullable=False),
    sa.Column("ttft_ms", sa.Integer(), nullable=True),
    sa.Column("status_code", sa.Integer(), nullable=False),
    sa.Column("error_type", sa.String(length=64), nullable=True),
    sa.Column("stream", sa.Boolean(), nullable=False),
    sa.Column("usage_estimated", sa.Boolean(), nullable=False),
    sa.Column(
        "routing",
        sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql"),
        nullable=True,
    ),
)
COLUMN_NAMES = ", ".join(column.name for column in EVENT_COLUMNS)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _measure_columns() -> list[sa.Column[Any]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in MEASURES]


def _dimension_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("group_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("app", sa.String(length=200), nullable=False),
    ]


def _months_of_rows(table: str) -> list[date]:
    rows = op.get_bind().execute(
        sa.text(f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') FROM {table}")  # noqa: S608 - a fixed table name
    )
    return sorted({value.date().replace(day=1) for (value,) in rows if value is not None})


def _create_partition(month: date) -> None:
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    op.execute(
        f"CREATE TABLE IF NOT EXISTS {PARTITION_PREFIX}{month.year:04d}_{month.month:02d} "
        f"PARTITION OF usage_events FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
        f"TO ('{following.isoformat()} 00:00:00+00')"
    )


NEW_INDEXES = (
    ("org_id", "created_at", "request_id"),
    ("org_id", "user_id", "created_at"),
    ("org_id", "key_id", "created_at"),
)
OLD_INDEX = "ix_usage_events_org_id_created_at"


def _create_old_usage_events() -> None:
    op.create_table(
        "usage_events",
        *(column._copy() for column in EVENT_COLUMNS),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_usage_events")),
    )
    op.create_index(OLD_INDEX, "usage_events", ["org_id", "created_at"], unique=False)


def _move_rows(drop_indexes: Sequence[str], create: Callable[[], None]) -> None:
    """Rebuild usage_events in a new shape (`create`), keeping every row."""
    for name in drop_indexes:
        op.drop_index(name, table_name="usage_events")
    op.rename_table("usage_events", "usage_events_old")
    if _is_postgres():
        op.execute(
            "ALTER TABLE usage_events_old RENAME CONSTRAINT pk_usage_events TO pk_usage_events_old"
        )
    create()
    op.execute(
        f"INSERT INTO usage_events ({COLUMN_NAMES}) SELECT {COLUMN_NAMES} FROM usage_events_old"  # noqa: S608
    )
    op.drop_table("usage_events_old")


def _create_new_usage_events() -> None:
    partitioned = _is_postgres()
    partitioning: dict[str, Any] = (
        {"postgresql_partition_by": "RANGE (created_at)"} if partitioned else {}
    )
    op.create_table(
        "usage_events",
        *(column._copy() for column in EVENT_COLUMNS),
        sa.PrimaryKeyConstraint("request_id", "created_at", name=op.f("pk_usage_events")),
        **partitioning,
    )
    for columns in NEW_INDEXES:
        op.create_index(_index_name(columns), "usage_events", list(columns), unique=False)
    if partitioned:
        # The months already holding rows, this one and the next; the writers make later ones.
        now = datetime.now(UTC)
        current = date(now.year, now.month, 1)
        following = date(current.year + current.month // 12, current.month % 12 + 1, 1)
        for month in sorted({*_months_of_rows("usage_events_old"), current, following}):
            _create_partition(month)


def _index_name(columns: Sequence[str]) -> str:
    return f"ix_usage_events_{'_'.join(columns)}"


def _backfill_rollups() -> None:
    """Sum the usage rows already stored into both rollup tables (an upgrade of a live system)."""
    from zoneinfo import ZoneInfo

    bind = op.get_bind()
    zones: dict[str, str] = dict(
        bind.execute(sa.text("SELECT id, timezone FROM organizations")).all()
    )
    quarters: dict[tuple[Any, ...], list[int]] = {}
    days: dict[tuple[Any, ...], list[int]] = {}
    blocked_types = {
        "budget_exceeded",
        "credit_exhausted",
        "rate_limited",
        "model_not_allowed",
        "ip_not_allowed",
        "max_tokens_not_allowed",
    }
    result = bind.execute(
        sa.text(
            "SELECT org_id, created_at, group_id, key_id, user_id, requested_model, provider, app, "
            "status_code, error_type, prompt_tokens, completion_tokens, cached_tokens, cost_nusd, "
            "latency_ms, ttft_ms FROM usage_events"
        )
    )
    for row in result:
        created = row.created_at
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
        zone = zones.get(row.org_id, "UTC")
        dims = (
            row.group_id,
            row.key_id,
            row.user_id,
            row.requested_model[:200],
            row.provider or "",
            row.app or "",
        )
        quarter = created.replace(
            minute=created.minute - created.minute % 15, second=0, microsecond=0
        )
        blocked = 1 if row.error_type in blocked_types else 0
        errors = 0 if blocked else (1 if row.status_code >= 400 else 0)
        values = (
            1,
            errors,
            blocked,
            row.prompt_tokens,
            row.completion_tokens,
            row.cached_tokens,
            row.cost_nusd,
            row.latency_ms,
            row.ttft_ms or 0,
            0 if row.ttft_ms is None else 1,
        )
        for table, key in (
            (quarters, (row.org_id, quarter, *dims)),
            (days, (row.org_id, zone, created.astimezone(ZoneInfo(zone)).date(), *dims)),
        ):
            sums = table.setdefault(key, [0] * len(MEASURES))
            for index, value in enumerate(values):
                sums[index] += value
    for name, table, head in (
        ("usage_rollups", quarters, ("org_id", "bucket_start")),
        ("usage_daily_rollups", days, ("org_id", "zone", "day")),
    ):
        target = sa.table(name, *(sa.column(c) for c in (*head, *DIMENSIONS, *MEASURES)))
        rows = [
            dict(zip((*head, *DIMENSIONS, *MEASURES), (*key, *sums), strict=True))
            for key, sums in table.items()
        ]
        for start in range(0, len(rows), BACKFILL_CHUNK):
            bind.execute(target.insert(), rows[start : start + BACKFILL_CHUNK])


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        *_dimension_columns(),
        *_measure_columns(),
        sa.PrimaryKeyConstraint(
            "org_id", "bucket_start", *DIMENSIONS, name=op.f("pk_usage_rollups")
        ),
    )
    op.create_table(
        "usage_daily_rollups",
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *_dimension_columns(),
        *_measure_columns(),
        sa.PrimaryKeyConstraint(
            "org_id", "zone", "day", *DIMENSIONS, name=op.f("pk_usage_daily_rollups")
        ),
    )
    _move_rows([OLD_INDEX], _create_new_usage_events)
    _backfill_rollups()


def downgrade() -> None:
    _move_rows([_index_name(columns) for columns in NEW_INDEXES], _create_old_usage_events)
    op.drop_table("usage_daily_rollups")
    op.drop_table("usage_rollups")
