"""The rules of the credit pool: top-ups, adjustments and refunds (one ledger row each, audited,
folded into the guard's credit counter once committed), the balance, and the ledger with the
running balance after each entry (paged as JSON, streamed as CSV).

Usage debits are not written here: the usage writer (metering.writer) grows one `usage` row per
org and UTC hour in the same transaction that stores the usage rows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import after_commit
from sluicegate.core.errors import InvalidInput, ServiceUnavailable
from sluicegate.core.ids import new_id
from sluicegate.core.money import nanos_to_usd
from sluicegate.credits import repository
from sluicegate.credits.repository import LedgerFilters
from sluicegate.guard.counters import (
    CounterStoreUnavailable,
    GuardStore,
    credit_counter,
)
from sluicegate.guard.enforcer import session_loader, sync_credit_from_ledger
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import Action, OrgAccess, TopUp, authorize

__all__ = ["LedgerFilters"]

MANUAL_KINDS = ("adjustment", "refund")
# The balance stays within +-1e9 USD, so sums stay far inside a signed 64-bit integer in
# SQLite's SUM and Redis' HINCRBY (each amount alone is capped at 1e9 USD by the USD field).
MAX_BALANCE_NANOS = 10**18
# Rows per query of a CSV export: memory stays bounded whatever the ledger's length.
EXPORT_PAGE = 500

log = logging.getLogger("sluicegate.credits")


@dataclass(frozen=True, slots=True)
class CreditBalance:
    """balance and reserved: the counter store's when credit is enforced (settled usage included
    before the usage writer has put it in the ledger), else the ledger's and 0."""

    balance: int
    reserved: int
    enforced: bool
    ledger_balance: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True, slots=True)
class LedgerLine:
    entry: LedgerEntry
    balance: int  # the running balance after this entry


# --- changes -------------------------------------------------------------------------------------


async def top_up(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    *,
    amount_nusd: int,
    note: str | None,
    now: datetime,
) -> LedgerEntry:
    """Owners, and admins bound at a level the org allows (topup_max_level), add credit."""
    access = await orgs.load_access(session, actor, org_id)
    org = await orgs.organization_of(session, access)
    authorize(access, Action.CREDIT_TOPUP, TopUp(max_level=org.topup_max_level))
    if amount_nusd <= 0:
        raise InvalidInput(
            "amount_usd: a top-up must be more than 0 USD", details={"field": "amount_usd"}
        )
    entry = await _append(
        session, actor, access, store, "credit.topup", "topup", amount_nusd, note, now
    )
    await orgs.enforce_credit_from_first_top_up(session, actor, org, access.root[0])
    return entry


async def adjust(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    store: GuardStore,
    *,
    amount_nusd: int,
    kind: str,
    note: str,
    now: datetime,
) -> LedgerEntry:
    """Owners correct the balance either way (adjustment) or give credit back (refund), always
    saying why in the note."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CREDIT_ADJUST)
    if kind not in MANUAL_KINDS:
        raise InvalidInput(
            f"kind: must be one of {', '.join(MANUAL_KINDS)}", details={"field": "kind"}
        )
    if amount_nusd == 0:
        raise InvalidInput(
            "amount_usd: must not be 0 (positive adds credit, negative takes it away)",
            details={"field": "amount_usd"},
        )
    if kind == "refund" and amount_nusd < 0:
        raise InvalidInput(
            "amount_usd: a refund gives credit back, so it must be positive; take credit away "
            "with kind 'adjustment'",
            details={"field": "amount_usd"},
        )
    if not note.strip():
        raise InvalidInput("note: say why the balance is adjusted", details={"field": "note"})
    return await _append(
        session, actor, access, store, "credit.adjust", kind, amount_nusd, note, now
    )


async def _append(
    session: AsyncSession,
    actor: Actor,
    access: OrgAccess,
    store: GuardStore,
    action: str,
    kind: str,
    amount_nusd: int,
    note: str | None,
    now: datetime,
) -> LedgerEntry:
    balance = await repository.balance(session, access.org_id)
    if abs(balance + amount_nusd) > MAX_BALANCE_NANOS:
        raise InvalidInput(
            f"amount_usd: the balance ({nanos_to_usd(balance)} USD) would leave the range of "
            f"+-{nanos_to_usd(MAX_BALANCE_NANOS)} USD",
            details={"field": "amount_usd"},
        )
    entry = LedgerEntry(
        id=new_id("led"),
        org_id=access.org_id,
        kind=kind,
        amount_nusd=amount_nusd,
        actor_user_id=actor.user_id,
        note=note,
        created_at=now,
    )
    await repository.add(session, entry)
    await record_action(
        session,
        actor,
        org_id=access.org_id,
        action=action,
        target_type="ledger_entry",
        target_id=entry.id,
        group_id=access.root[0],
        after=entry_view(entry),
    )
    _sync_after_commit(session, store, access.org_id)
    return entry


def _sync_after_commit(session: AsyncSession, store: GuardStore, org_id: str) -> None:
    """Once committed (never before: a rolled-back top-up must not reach the counter), fold the
    ledger's non-usage total into the credit counter. The seed is read after the commit in a
    session of its own, and sync_credit applies it only if newer than what the counter has seen,
    so concurrent or repeated syncs converge. When the store is down the counter stays behind
    until the next sync or its rebuild from the ledger."""
    bind = session.bind
    counter = credit_counter(org_id)

    async def sync() -> None:
        try:
            async with AsyncSession(bind, expire_on_commit=False) as fresh:
                await sync_credit_from_ledger(store, fresh, counter)
        except CounterStoreUnavailable as exc:
            log.warning(
                "credit counter not updated after a ledger change (counter store unavailable: "
                "%s); the next top-up or a rebuild from the ledger brings it up to date",
                exc,
                extra={"org_id": org_id},
            )

    after_commit(session, sync)


# --- reading -------------------------------------------------------------------------------------


async def balance(
    session: AsyncSession, actor: Actor, org_id: str, store: GuardStore
) -> CreditBalance:
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CREDIT_READ)
    org = await orgs.organization_of(session, access)
    ledger = await repository.balance(session, org_id)
    if not org.credit_enforced:
        return CreditBalance(ledger, 0, False, ledger)
    try:
        [value] = await store.read([credit_counter(org_id)], session_loader(session))
    except CounterStoreUnavailable as exc:
        raise ServiceUnavailable(
            "the counter store (Redis) is unavailable, so the live credit balance and what "
            f"requests in flight hold cannot be read right now; retry shortly ({exc})"
        ) from None
    return CreditBalance(value.used, value.reserved, True, ledger)


async def list_ledger(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    filters: LedgerFilters,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[LedgerLine], str | None]:
    """Newest first, each entry with the balance right after it."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CREDIT_READ)
    after = repository.decode_key(cursor)
    rows = await repository.entries(
        session, org_id, filters, after=after, limit=limit + 1, newest_first=True
    )
    next_cursor = repository.encode_key(rows[limit - 1]) if len(rows) > limit else None
    rows = rows[:limit]
    balances = await repository.running_balances(session, org_id, rows, filters)
    return [LedgerLine(e, b) for e, b in zip(rows, balances, strict=True)], next_cursor


async def export_ledger(
    session: AsyncSession, actor: Actor, org_id: str, filters: LedgerFilters
) -> AsyncIterator[list[LedgerLine]]:
    """Checks access now, then yields the ledger oldest first in pages, each read in a session
    of its own while the answer streams (the request's transaction is over by then)."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CREDIT_READ)
    return _pages(session.bind, org_id, filters)


async def _pages(
    bind: AsyncEngine | AsyncConnection | None, org_id: str, filters: LedgerFilters
) -> AsyncIterator[list[LedgerLine]]:
    after = None
    while True:
        async with AsyncSession(bind, expire_on_commit=False) as fresh:
            rows = await repository.entries(
                fresh, org_id, filters, after=after, limit=EXPORT_PAGE, newest_first=False
            )
            balances = await repository.running_balances(fresh, org_id, rows, filters)
        if rows:
            yield [LedgerLine(e, b) for e, b in zip(rows, balances, strict=True)]
        if len(rows) < EXPORT_PAGE:
            return
        after = repository.key_of(rows[-1])


def entry_view(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "amount_usd": nanos_to_usd(entry.amount_nusd),
        "note": entry.note,
    }
