"""Keyed audit links: each event records how its hash links (1 unkeyed SHA-256, as every event
so far; 2 HMAC under a key derived from SLUICEGATE_SECRET_KEY, from now on), and each chain's
head carries a seal of (seq, hash) under that key. Existing heads are sealed here, once: after
this, no chain verifies without a valid seal, so nobody who can only write the database can
rewrite a chain in the unkeyed form and pass it off as an old one. The `audit.checkpoint` alert
event joins the rules' events.

The seal needs the key: `sluicegate migrate` (and `serve`) pass it. A database that holds audit
events cannot be upgraded without it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS_BEFORE = (
    "budget.threshold",
    "credit.low",
    "anomaly.detected",
    "guardrail.blocked",
    "key.created",
    "key.disabled",
    "key.expired",
    "member.joined",
    "member.removed",
)
EVENTS_AFTER = (*EVENTS_BEFORE, "audit.checkpoint")


def _event_check(events: tuple[str, ...]) -> str:
    return f"event IN ({', '.join(repr(event) for event in events)})"


def _head_mac(key: bytes, chain: str, seq: int, last_hash: str) -> str:
    # The same formula as sluicegate.audit.chain.head_mac (migrations import none of our code).
    return hmac.new(key, f"{chain}:{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()


def upgrade() -> None:
    # Checked before any change: SQLite does not roll DDL back with the transaction.
    heads = op.get_bind().execute(sa.text("SELECT org_id, seq, hash FROM audit_heads")).all()
    config = op.get_context().config
    key = config.attributes.get("audit_key") if config is not None else None
    if heads and key is None:
        raise RuntimeError(
            "SLUICEGATE_SECRET_KEY is needed to upgrade a database that holds audit events "
            "(migration 0008 seals each chain's head with a key derived from it): run "
            "`sluicegate migrate` with the secret key the gateway runs with"
        )
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(
            sa.Column(
                "hash_version", sa.SmallInteger(), server_default=sa.text("1"), nullable=False
            )
        )
    with op.batch_alter_table("audit_heads") as batch:
        batch.add_column(sa.Column("mac", sa.String(length=64), nullable=True))
    if heads:
        assert key is not None
        op.get_bind().execute(
            sa.text("UPDATE audit_heads SET mac = :mac WHERE org_id = :chain"),
            [
                {"chain": chain, "mac": _head_mac(key, chain, seq, last_hash)}
                for chain, seq, last_hash in heads
            ],
        )
    with op.batch_alter_table("alert_rules") as batch:
        batch.drop_constraint(op.f("ck_alert_rules_event"), type_="check")
        batch.create_check_constraint("event", _event_check(EVENTS_AFTER))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM alert_rules WHERE event = 'audit.checkpoint'"))
    with op.batch_alter_table("alert_rules") as batch:
        batch.drop_constraint(op.f("ck_alert_rules_event"), type_="check")
        batch.create_check_constraint("event", _event_check(EVENTS_BEFORE))
    with op.batch_alter_table("audit_heads") as batch:
        batch.drop_column("mac")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("hash_version")
