"""Factories of the tests: orgs, groups, members, API keys and budgets, each returned as a small
record of what a test goes on with.

Over the admin API, as a client makes them: `make_org` (by a new person, its owner) or
`make_org_as` (by a given one), then `add_group`, `join` (invited by the owner and accepted),
`make_key` and `put_budget`. Below HTTP, for tests of the proxy, the workers and the storage,
through the service functions the routes call: `make_service_org`, `make_tenant` (an org with
a group and a key), `put_tenant_budget`, and `tenant_owner` to speak HTTP about such an org.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.actors import Actor
from sluicegate.guard import budget_service
from sluicegate.identity.models import User
from sluicegate.identity.service import actor_for, ensure_user, issue_admin_token
from sluicegate.keys.service import create_key
from sluicegate.orgs.group_service import create_group
from sluicegate.orgs.models import Group as GroupRow
from sluicegate.orgs.service import create_organization
from sluicegate.runtime import Runtime
from tests.admin import Api, Person, make_person, ok, unique_address

PASSWORD = "a long enough password"
# The groups `levels` makes under the root, each below the one before (an org allows 3 levels
# below its root unless its max_level says otherwise).
LEVELS = ("division", "team", "project")


# --- over the admin API ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Org:
    """An org made over the admin API: its owner (a client signed in as them), its root group,
    the groups `levels` made one below the other (`division` at level 1, `team` at 2, `project`
    at 3) and the creation answer."""

    owner: Api
    id: str
    root: str
    body: dict[str, Any] = field(repr=False)
    chain: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        return f"/api/v1/orgs/{self.id}"

    @property
    def client(self) -> httpx.AsyncClient:
        return self.owner.client

    @property
    def division(self) -> str:
        return self._level(1)

    @property
    def team(self) -> str:
        return self._level(2)

    @property
    def project(self) -> str:
        return self._level(3)

    @property
    def credits(self) -> str:
        return f"{self.base}/credits"

    @property
    def channels(self) -> str:
        return f"{self.base}/alerts/channels"

    @property
    def rules(self) -> str:
        return f"{self.base}/alerts/rules"

    def _level(self, level: int) -> str:
        assert len(self.chain) >= level, (
            f"the org has {len(self.chain)} levels of groups; make it with levels={level}"
        )
        return self.chain[level - 1]


@dataclass(frozen=True)
class Group:
    id: str
    name: str
    parent_id: str | None
    level: int
    path: tuple[str, ...]  # group ids from the root down to this group


@dataclass(frozen=True)
class Key:
    id: str
    secret: str
    group_id: str
    owner_user_id: str
    body: dict[str, Any] = field(repr=False)  # the creation answer


@dataclass(frozen=True)
class Budget:
    id: str
    scope_type: str
    scope_id: str
    body: dict[str, Any] = field(repr=False)  # the answer of the PUT


async def make_org(
    runtime: Runtime,
    client: httpx.AsyncClient,
    name: str = "Acme",
    *,
    levels: int = 0,
    **fields: Any,
) -> Org:
    """An org made over the admin API by a new person, its owner. `fields` are the other
    settings of the creation (timezone, ...)."""
    owner = Api(client, await make_person(runtime))
    return await make_org_as(owner, name, levels=levels, **fields)


async def make_org_as(owner: Api, name: str = "Acme", *, levels: int = 0, **fields: Any) -> Org:
    """An org made over the admin API by `owner`, with `levels` groups one below the other."""
    assert levels <= len(LEVELS), f"at most {len(LEVELS)} levels are named"
    body = ok(await owner.post("/api/v1/orgs", json={"name": name, **fields}), 201)
    org = Org(owner, body["id"], body["root_group_id"], body)
    chain: list[str] = []
    for label in LEVELS[:levels]:
        chain.append((await add_group(org, label, chain[-1] if chain else None)).id)
    return replace(org, chain=tuple(chain))


async def add_group(org: Org, name: str, parent: str | None = None) -> Group:
    """A group made by the owner under `parent` (the root when None)."""
    body = {"name": name} if parent is None else {"name": name, "parent_id": parent}
    made = ok(await org.owner.post(f"{org.base}/groups", json=body), 201)
    return Group(made["id"], made["name"], made["parent_id"], made["level"], tuple(made["path"]))


async def join(org: Org, role: str, group: str, *, name: str | None = None) -> Api:
    """A new person the owner invited to `role` at `group` (their home), who accepted and is
    signed in. Their email starts with their name (`role` title-cased unless given), dashed."""
    name = name or role.title()
    email = unique_address(name.lower().replace(" ", "-"))
    invitation = ok(
        await org.owner.post(
            f"{org.base}/invitations", json={"email": email, "role": role, "group_id": group}
        ),
        201,
    )
    accepted = ok(
        await org.client.post(
            f"/api/v1/invitations/{invitation['token']}/accept",
            json={"name": name, "password": PASSWORD},
        )
    )
    return Api(org.client, Person(accepted["user_id"], email, accepted["token"]))


async def make_key(
    org: Org,
    group: str,
    *,
    by: Api | None = None,
    name: str = "k",
    owner_user_id: str | None = None,
    **fields: Any,
) -> Key:
    """An API key in `group`, made by `by` (the org's owner unless given) for `owner_user_id`
    (the maker unless given). `fields` are the other settings (allowed_models, expires_at)."""
    body: dict[str, Any] = {"name": name, "group_id": group, **fields}
    if owner_user_id is not None:
        body["owner_user_id"] = owner_user_id
    made = ok(await (by or org.owner).post(f"{org.base}/keys", json=body), 201)
    return Key(made["id"], made["key"], made["group_id"], made["owner_user_id"], made)


async def put_budget(
    org: Org,
    scope_type: str,
    scope_id: str | None,
    limit_usd: str,
    *,
    period: str = "month",
    by: Api | None = None,
    **fields: Any,
) -> Budget:
    """The budget of (scope, period) put by `by` (the org's owner unless given). `fields` are
    the other settings (enforcement, thresholds)."""
    body = {
        "scope_type": scope_type,
        "scope_id": scope_id,
        "limit_usd": limit_usd,
        "period": period,
        **fields,
    }
    made = ok(await (by or org.owner).put(f"{org.base}/budgets", json=body))
    return Budget(made["id"], made["scope_type"], made["scope_id"], made)


# --- below HTTP, through the services -------------------------------------------------------------


@dataclass(frozen=True)
class ServiceOrg:
    id: str
    root: str
    owner: Actor


@dataclass(frozen=True)
class Tenant:
    org_id: str
    group_id: str
    user_id: str
    key_id: str
    key: str

    @property
    def actor(self) -> Actor:
        """The org's owner, who also owns the key."""
        return Actor(user_id=self.user_id, email="owner@example.com")


async def make_service_org(runtime: Runtime, name: str = "Acme") -> ServiceOrg:
    """An org made through the orgs service by a new person, its owner."""
    async with runtime.unit_of_work() as session:
        return await _service_org(session, name)


async def _service_org(session: AsyncSession, name: str) -> ServiceOrg:
    owner, _ = await ensure_user(session, f"owner-{secrets.token_hex(6)}@example.com")
    actor = actor_for(owner)
    org = await create_organization(session, actor, name=name)
    root = await session.scalar(
        select(GroupRow.id).where(GroupRow.org_id == org.id, GroupRow.parent_id.is_(None))
    )
    assert root is not None
    return ServiceOrg(org.id, root, actor)


async def make_tenant(
    runtime: Runtime, *, allowed_models: list[str] | None = None, group_name: str = "project"
) -> Tenant:
    """An org made through the services, with a group under the root and the owner's key in it."""
    async with runtime.unit_of_work() as session:
        org = await _service_org(session, "Acme")
        group = await create_group(session, org.owner, org.id, name=group_name)
        key, secret = await create_key(
            session,
            org.owner,
            org.id,
            pepper=runtime.settings.secret,
            group_id=group.id,
            name="test key",
            allowed_models=allowed_models,
            now=runtime.clock.now(),
        )
        return Tenant(org.id, group.id, org.owner.user_id, key.id, secret)


async def put_tenant_budget(
    runtime: Runtime,
    tenant: Tenant,
    limit_nusd: int,
    *,
    scope: str = "key",
    period: str = "month",
    enforcement: str = "hard",
    thresholds: Sequence[int] = (),
) -> str:
    """The id of the budget the tenant's owner put on its key (or, with scope "org", the org),
    through the budget service."""
    async with runtime.unit_of_work() as session:
        view = await budget_service.put_budget(
            session,
            tenant.actor,
            tenant.org_id,
            runtime.counters,
            scope_type=scope,
            scope_id=tenant.key_id if scope == "key" else tenant.org_id,
            limit_nusd=limit_nusd,
            period=period,
            enforcement=enforcement,
            thresholds=list(thresholds),
            now=runtime.clock.now(),
        )
    return view.budget.id


async def tenant_owner(runtime: Runtime, client: httpx.AsyncClient, tenant: Tenant) -> Api:
    """A client acting as the tenant's owner with a new admin token, to speak HTTP like any
    admin about an org made below it."""
    async with runtime.unit_of_work() as session:
        user = await session.get(User, tenant.user_id)
        assert user is not None
        _token, secret = await issue_admin_token(session, user, pepper=runtime.settings.secret)
    return Api(client, Person(user.id, user.email, secret))
