"""The SQL of the guardrails: budgets and policies, the rules snapshot the proxy caches per org,
and the sums that rebuild a missing counter from usage rows and the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Select,
    and_,
    case,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from sluicegate.core.ids import has_prefix
from sluicegate.core.pagination import paginate
from sluicegate.guard.counters import CreditSeed, PendingCharge, SpendScope
from sluicegate.guard.models import Budget, Policy, PolicyBinding
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.metering.models import UsageEvent, UsageRollup
from sluicegate.metering.rollups import BUCKET_SECONDS
from sluicegate.orgs.models import PATH_SEPARATOR, Group, Membership, Organization, in_subtrees

# --- rebuilding counters ---------------------------------------------------------------------


async def spent(
    session: AsyncSession, scope: SpendScope, pending: Sequence[PendingCharge] = ()
) -> int:
    """Settled spend of a budget scope in its period: the 15-minute usage rollups (written with
    the usage rows, and kept when the usage retention removes old rows), plus the pending charges
    of the scope the database does not hold yet. A period whose bounds are not on quarter hours
    (a zone whose offset is not a multiple of 15 minutes) is summed from the usage rows instead,
    which still hold it exactly."""
    aligned = all(
        bound is None or bound.timestamp() % BUCKET_SECONDS == 0
        for bound in (scope.start, scope.end)
    )
    table: Any = UsageRollup if aligned else UsageEvent
    time_column = UsageRollup.bucket_start if aligned else UsageEvent.created_at
    statement: Select[Any] = select(func.coalesce(func.sum(table.cost_nusd), 0)).where(
        table.org_id == scope.org_id
    )
    if scope.start is not None and scope.end is not None:
        statement = statement.where(time_column >= scope.start, time_column < scope.end)
    subtree: set[str] | None = None
    if scope.kind == "key":
        statement = statement.where(table.key_id == scope.id)
    elif scope.kind == "member":
        statement = statement.where(table.user_id == scope.id)
    elif scope.kind == "group":
        path = await session.scalar(
            select(Group.path).where(Group.org_id == scope.org_id, Group.id == scope.id)
        )
        if path is None:
            return 0
        subtree_ids = select(Group.id).where(
            Group.org_id == scope.org_id, in_subtrees(Group.path, [path])
        )
        statement = statement.where(table.group_id.in_(subtree_ids))
        if pending:
            subtree = set(await session.scalars(subtree_ids))
    charges = [c for c in pending if _charges_scope(c, scope, subtree)]
    row = (await session.execute(statement.add_columns(_stored_cost(scope.org_id, charges)))).one()
    return int(row[0] or 0) + sum(c.cost for c in charges) - int(row[1] or 0)


def _charges_scope(charge: PendingCharge, scope: SpendScope, subtree: set[str] | None) -> bool:
    if scope.start is not None and scope.end is not None:
        if not scope.start <= charge.created_at < scope.end:
            return False
    if scope.kind == "key":
        return charge.key_id == scope.id
    if scope.kind == "member":
        return charge.user_id == scope.id
    if scope.kind == "group":
        return subtree is not None and charge.group_id in subtree
    return True


def _stored_cost(org_id: str, charges: Sequence[PendingCharge]) -> Any:
    """What those of the pending `charges` the database holds already cost: a column to read in
    the same statement as the sums it corrects (a usage batch committed between two statements
    would be counted twice, or not at all)."""
    if not charges:
        return literal(0)
    return (
        select(func.coalesce(func.sum(UsageEvent.cost_nusd), 0))
        .where(
            UsageEvent.org_id == org_id,
            UsageEvent.created_at >= min(c.created_at for c in charges),
            UsageEvent.created_at <= max(c.created_at for c in charges),
            tuple_(UsageEvent.request_id, UsageEvent.created_at).in_(
                [(c.request_id, c.created_at) for c in charges]
            ),
        )
        .correlate(None)  # never bound to the usage rows the outer sum may read
        .scalar_subquery()
    )


async def credit_seed(
    session: AsyncSession, org_id: str, pending: Sequence[PendingCharge] = ()
) -> CreditSeed:
    """The balance (every ledger entry, less the pending charges the ledger does not hold yet:
    usage debits are written with the usage rows) and the total and count of non-usage
    entries, all in one statement."""
    other = LedgerEntry.kind != "usage"
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(LedgerEntry.amount_nusd), 0),
                func.coalesce(func.sum(case((other, LedgerEntry.amount_nusd), else_=0)), 0),
                func.count().filter(other),
                _stored_cost(org_id, pending),
            ).where(LedgerEntry.org_id == org_id)
        )
    ).one()
    balance = int(row[0]) - sum(c.cost for c in pending) + int(row[3] or 0)
    return CreditSeed(balance, int(row[1]), int(row[2]))


# --- the rules snapshot ------------------------------------------------------------------------


async def guard_settings(session: AsyncSession, org_id: str) -> tuple[str, bool] | None:
    """(timezone, credit_enforced) of a live org."""
    row = (
        await session.execute(
            select(Organization.timezone, Organization.credit_enforced).where(
                Organization.id == org_id, Organization.deleted_at.is_(None)
            )
        )
    ).first()
    return None if row is None else (str(row[0]), bool(row[1]))


async def budgets_of_org(session: AsyncSession, org_id: str) -> list[Budget]:
    return list(await session.scalars(select(Budget).where(Budget.org_id == org_id)))


async def bound_policies(session: AsyncSession, org_id: str) -> list[tuple[PolicyBinding, Policy]]:
    rows = await session.execute(
        select(PolicyBinding, Policy)
        .join(Policy, Policy.id == PolicyBinding.policy_id)
        .where(PolicyBinding.org_id == org_id)
        .order_by(PolicyBinding.id)
    )
    return [(binding, policy) for binding, policy in rows]


async def scope_names(
    session: AsyncSession,
    org_id: str,
    group_ids: Sequence[str],
    key_ids: Sequence[str],
    user_ids: Sequence[str],
) -> dict[tuple[str, str], str]:
    """Display names of the scopes rules name: groups and keys by name, members by email."""
    names: dict[tuple[str, str], str] = {}
    if group_ids:
        rows = await session.execute(
            select(Group.id, Group.name).where(Group.org_id == org_id, Group.id.in_(group_ids))
        )
        names.update({("group", i): n for i, n in rows})
    if key_ids:
        rows = await session.execute(
            select(ApiKey.id, ApiKey.name).where(ApiKey.org_id == org_id, ApiKey.id.in_(key_ids))
        )
        names.update({("key", i): n for i, n in rows})
    if user_ids:
        rows = await session.execute(select(User.id, User.email).where(User.id.in_(user_ids)))
        names.update({("member", i): n for i, n in rows})
    return names


# --- budgets -------------------------------------------------------------------------------------


async def budget_in_org(session: AsyncSession, org_id: str, budget_id: str) -> Budget | None:
    if not has_prefix(budget_id, "bud"):
        return None
    return await session.scalar(
        select(Budget).where(Budget.org_id == org_id, Budget.id == budget_id)
    )


async def budget_for_scope(
    session: AsyncSession, org_id: str, scope_type: str, scope_id: str, period: str
) -> Budget | None:
    return await session.scalar(
        select(Budget)
        .where(
            Budget.org_id == org_id,
            Budget.scope_type == scope_type,
            Budget.scope_id == scope_id,
            Budget.period == period,
        )
        .with_for_update()
    )


async def list_budgets(
    session: AsyncSession,
    org_id: str,
    *,
    scope_type: str | None,
    scope_id: str | None,
    readable: list[str] | None,
    reader: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[Budget], str | None]:
    """Budgets of the org; with `readable` (subtree paths), only those whose scope lies in one of
    them, plus the reader's own member and key budgets. None: all of them."""
    statement = select(Budget).where(Budget.org_id == org_id)
    if scope_type is not None:
        statement = statement.where(Budget.scope_type == scope_type)
    if scope_id is not None:
        statement = statement.where(Budget.scope_id == scope_id)
    if readable is not None:
        statement = _readable_budgets(statement, readable, reader)
    return await paginate(session, statement, Budget.id, cursor=cursor, limit=limit)


def _readable_budgets(statement: Select[Any], readable: list[str], reader: str) -> Select[Any]:
    scope_group, key_group, home_group = aliased(Group), aliased(Group), aliased(Group)
    at_root = any(PATH_SEPARATOR not in path for path in readable)
    statement = (
        statement.outerjoin(
            scope_group, and_(Budget.scope_type == "group", scope_group.id == Budget.scope_id)
        )
        .outerjoin(ApiKey, and_(Budget.scope_type == "key", ApiKey.id == Budget.scope_id))
        .outerjoin(key_group, key_group.id == ApiKey.group_id)
        .outerjoin(
            Membership,
            and_(
                Budget.scope_type == "member",
                Membership.org_id == Budget.org_id,
                Membership.user_id == Budget.scope_id,
            ),
        )
        .outerjoin(home_group, home_group.id == Membership.home_group_id)
    )
    return statement.where(
        or_(
            and_(Budget.scope_type == "group", in_subtrees(scope_group.path, readable)),
            and_(
                Budget.scope_type == "key",
                or_(in_subtrees(key_group.path, readable), ApiKey.owner_user_id == reader),
            ),
            and_(
                Budget.scope_type == "member",
                or_(in_subtrees(home_group.path, readable), Budget.scope_id == reader),
            ),
            and_(Budget.scope_type.in_(("org", "member_default")), true() if at_root else false()),
        )
    )


async def add(session: AsyncSession, *rows: Budget | Policy | PolicyBinding) -> None:
    session.add_all(rows)
    await session.flush()


async def delete_row(session: AsyncSession, row: Budget | Policy | PolicyBinding) -> None:
    await session.delete(row)
    await session.flush()


# --- policies ------------------------------------------------------------------------------------


async def policy_in_org(session: AsyncSession, org_id: str, policy_id: str) -> Policy | None:
    if not has_prefix(policy_id, "pol"):
        return None
    return await session.scalar(
        select(Policy).where(Policy.org_id == org_id, Policy.id == policy_id)
    )


async def policy_named(session: AsyncSession, org_id: str, name: str) -> Policy | None:
    return await session.scalar(select(Policy).where(Policy.org_id == org_id, Policy.name == name))


async def list_policies(
    session: AsyncSession, org_id: str, *, cursor: str | None, limit: int
) -> tuple[list[Policy], str | None]:
    statement = select(Policy).where(Policy.org_id == org_id)
    return await paginate(session, statement, Policy.id, cursor=cursor, limit=limit)


async def bindings_of(
    session: AsyncSession, org_id: str, policy_ids: Sequence[str]
) -> list[PolicyBinding]:
    if not policy_ids:
        return []
    return list(
        await session.scalars(
            select(PolicyBinding)
            .where(PolicyBinding.org_id == org_id, PolicyBinding.policy_id.in_(policy_ids))
            .order_by(PolicyBinding.id)
        )
    )


async def binding(
    session: AsyncSession, org_id: str, policy_id: str, target_type: str, target_id: str
) -> PolicyBinding | None:
    return await session.scalar(
        select(PolicyBinding).where(
            PolicyBinding.org_id == org_id,
            PolicyBinding.policy_id == policy_id,
            PolicyBinding.target_type == target_type,
            PolicyBinding.target_id == target_id,
        )
    )


async def delete_bindings_of(session: AsyncSession, org_id: str, policy_id: str) -> None:
    await session.execute(
        delete(PolicyBinding).where(
            PolicyBinding.org_id == org_id, PolicyBinding.policy_id == policy_id
        )
    )


async def binding_of_policy(
    session: AsyncSession, org_id: str, policy_id: str, binding_id: str
) -> PolicyBinding | None:
    if not has_prefix(binding_id, "pb"):
        return None
    return await session.scalar(
        select(PolicyBinding).where(
            PolicyBinding.org_id == org_id,
            PolicyBinding.policy_id == policy_id,
            PolicyBinding.id == binding_id,
        )
    )
