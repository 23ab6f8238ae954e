"""Rollups by deployment: the 15-minute and daily rollups gain a `deployment` dimension (the
deployment that served, from the usage event's routing; '' for a request that reached none),
part of their key, and the org-wide daily rollups a `deployment` dimension. Rows already stored
get '' (no usage event carried a deployment before this), so every sum stays what it was; the
org-wide rows of the new dimension are summed from the daily rollups.

Downgrading folds the rows that differ only by deployment into one (measures summed), so the
sums still hold without the column.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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
DEPLOYMENT_LENGTH = 200
# Each rollup table and the columns that precede the dimensions in its key.
TABLES = (
    ("usage_rollups", ("org_id", "bucket_start")),
    ("usage_daily_rollups", ("org_id", "zone", "day")),
)


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _head_columns(table: str) -> list[sa.Column[Any]]:
    if table == "usage_rollups":
        return [
            sa.Column("org_id", sa.String(length=40), nullable=False),
            sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        ]
    return [
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
    ]


def _dimension_columns(with_deployment: bool) -> list[sa.Column[Any]]:
    columns = [
        sa.Column("group_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("app", sa.String(length=200), nullable=False),
    ]
    if with_deployment:
        columns.append(_deployment_column())
    return columns


def _deployment_column() -> sa.Column[Any]:
    # The default stays: a release from before 0010, still running during a rolling upgrade,
    # writes rollups without the column, and its rows belong under "no deployment".
    return sa.Column(
        "deployment", sa.String(length=DEPLOYMENT_LENGTH), nullable=False, server_default=""
    )


def _rebuild(table: str, head: tuple[str, ...], *, with_deployment: bool) -> None:
    """Copy `table` into a new one of the shape wanted, keeping every sum: with the deployment,
    each row with deployment ''; without it, the rows that differ only by deployment summed."""
    old = f"{table}_old"
    op.rename_table(table, old)
    if _is_postgres():
        # The key's name is an index name, unique in the schema: the new table takes it.
        op.execute(f"ALTER TABLE {old} RENAME CONSTRAINT pk_{table} TO pk_{old}")
    key = [*head, *DIMENSIONS, *(("deployment",) if with_deployment else ())]
    op.create_table(
        table,
        *_head_columns(table),
        *_dimension_columns(with_deployment),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in MEASURES),
        sa.PrimaryKeyConstraint(*key, name=f"pk_{table}"),
    )
    grouped = ", ".join((*head, *DIMENSIONS))
    measures = ", ".join(MEASURES)
    # Constants only: the table and column names above.
    if with_deployment:
        op.execute(
            f"INSERT INTO {table} ({grouped}, deployment, {measures}) "  # noqa: S608
            f"SELECT {grouped}, '', {measures} FROM {old}"
        )
    else:
        sums = ", ".join(f"sum({name})" for name in MEASURES)
        op.execute(
            f"INSERT INTO {table} ({grouped}, {measures}) "  # noqa: S608
            f"SELECT {grouped}, {sums} FROM {old} GROUP BY {grouped}"
        )
    op.drop_table(old)


def _add_deployment_in_place(table: str, head: tuple[str, ...]) -> None:
    """Postgres: the column with a default is added without rewriting the table (the rows
    already stored read ''), and the key rebuilt with the column."""
    op.add_column(table, _deployment_column())
    op.drop_constraint(f"pk_{table}", table, type_="primary")
    op.create_primary_key(f"pk_{table}", table, [*head, *DIMENSIONS, "deployment"])


def upgrade() -> None:
    for table, head in TABLES:
        if _is_postgres():
            _add_deployment_in_place(table, head)
        else:
            # SQLite changes no key in place: the table is copied.
            _rebuild(table, head, with_deployment=True)
    measures = ", ".join(MEASURES)
    sums = ", ".join(f"sum({name})" for name in MEASURES)
    op.execute(
        f"INSERT INTO usage_org_daily_rollups (org_id, zone, dimension, day, value, {measures}) "  # noqa: S608
        f"SELECT org_id, zone, 'deployment', day, deployment, {sums} FROM usage_daily_rollups "
        "GROUP BY org_id, zone, day, deployment"
    )


def downgrade() -> None:
    op.execute("DELETE FROM usage_org_daily_rollups WHERE dimension = 'deployment'")
    for table, head in TABLES:
        _rebuild(table, head, with_deployment=False)
