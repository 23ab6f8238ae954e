"""The data layer behaves the same on Postgres and embedded SQLite."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from sluicegate.core.db import transaction
from sluicegate.core.ids import new_id
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.orgs.models import Group
from sluicegate.runtime import Runtime
from tests.factories import make_service_org


async def test_timestamps_come_back_aware_utc(
    runtime: Runtime, unique_email: Callable[[], str]
) -> None:
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    moment = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=kathmandu)
    user = User(id=new_id("usr"), email=unique_email(), created_at=moment, updated_at=moment)
    async with transaction(runtime.sessions) as session:
        session.add(user)
    async with runtime.sessions() as session:
        stored = await session.get(User, user.id)
    assert stored is not None
    assert stored.created_at == moment
    assert stored.created_at.tzinfo == UTC


async def test_naive_datetimes_are_refused(
    runtime: Runtime, unique_email: Callable[[], str]
) -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(Exception, match="naive datetime"):
        async with transaction(runtime.sessions) as session:
            session.add(User(id=new_id("usr"), email=unique_email(), created_at=naive))


async def test_money_beyond_double_precision_is_exact(runtime: Runtime) -> None:
    org = await make_service_org(runtime)
    # 2**53 + 1 nano-USD cannot be represented by a float; the ledger must keep it exactly.
    amounts = [2**53 + 1, -(10**17) + 7, 3]
    async with transaction(runtime.sessions) as session:
        for amount in amounts:
            session.add(
                LedgerEntry(id=new_id("led"), org_id=org.id, kind="topup", amount_nusd=amount)
            )
    async with runtime.sessions() as session:
        total = await session.scalar(
            select(func.sum(LedgerEntry.amount_nusd)).where(LedgerEntry.org_id == org.id)
        )
    assert int(total) == sum(amounts)


async def test_json_columns_round_trip(runtime: Runtime, unique_email: Callable[[], str]) -> None:
    org = await make_service_org(runtime)
    owner = User(id=new_id("usr"), email=unique_email())
    key = ApiKey(
        id=new_id("key"),
        org_id=org.id,
        group_id=org.root,
        owner_user_id=owner.id,
        name="ci",
        prefix="sk-sg-abcdef",
        digest=new_id("dig"),
        allowed_models=["gpt-4o-mini", "anthropic/*"],
    )
    async with transaction(runtime.sessions) as session:
        session.add(owner)
        await session.flush()
        session.add(key)
    async with runtime.sessions() as session:
        stored = await session.get(ApiKey, key.id)
    assert stored is not None and stored.allowed_models == ["gpt-4o-mini", "anthropic/*"]


async def test_email_is_unique(runtime: Runtime, unique_email: Callable[[], str]) -> None:
    email = unique_email()
    async with transaction(runtime.sessions) as session:
        session.add(User(id=new_id("usr"), email=email))
    with pytest.raises(IntegrityError):
        async with transaction(runtime.sessions) as session:
            session.add(User(id=new_id("usr"), email=email))


async def test_foreign_keys_are_enforced(runtime: Runtime) -> None:
    with pytest.raises(IntegrityError):
        async with transaction(runtime.sessions) as session:
            session.add(Group(id=new_id("grp"), org_id="org_missing", name="x", level=0, path="x"))


async def test_a_failed_unit_of_work_leaves_nothing(
    runtime: Runtime, unique_email: Callable[[], str]
) -> None:
    email = unique_email()
    with pytest.raises(RuntimeError):
        async with transaction(runtime.sessions) as session:
            session.add(User(id=new_id("usr"), email=email))
            await session.flush()
            raise RuntimeError("abort")
    async with runtime.sessions() as session:
        assert await session.scalar(select(User).where(User.email == email)) is None
