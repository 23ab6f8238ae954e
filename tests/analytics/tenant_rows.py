"""An org for the property tests, written straight to the database (over the API it takes ten
calls per example): the root and a team, the owner with a key at each, a member of the team with
a key there, and the owner's admin token."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from sluicegate.core.actors import Actor
from sluicegate.core.digests import secret_digest
from sluicegate.core.ids import new_id
from sluicegate.identity.models import User
from sluicegate.identity.service import issue_admin_token
from sluicegate.keys.models import ApiKey
from sluicegate.orgs.models import Group, Membership, Organization, RoleBinding
from sluicegate.runtime import Runtime
from tests.admin import Api, Person, unique_address


@dataclass
class Tenant:
    org_id: str
    zone: str
    owner: Actor
    api: Api
    # (group, key, user) a request may come from
    sources: list[tuple[str, str, str]]


async def make_tenant(runtime: Runtime, client: httpx.AsyncClient, zone: str) -> Tenant:
    """An org in `zone` written straight to the database (over the API it takes ten calls per
    example): the root and a team, the owner with a key at each, a member of the team with a
    key there."""
    pepper = runtime.settings.secret
    async with runtime.unit_of_work() as session:
        org = Organization(id=new_id("org"), name="Exact", timezone=zone)
        owner = User(id=new_id("usr"), email=unique_address("owner"))
        member = User(id=new_id("usr"), email=unique_address("member"))
        session.add_all([org, owner, member])
        await session.flush()
        root_id, team_id = new_id("grp"), new_id("grp")
        session.add(Group(id=root_id, org_id=org.id, name="Exact", level=0, path=root_id))
        await session.flush()
        team = Group(
            id=team_id,
            org_id=org.id,
            parent_id=root_id,
            name="Team",
            level=1,
            path=f"{root_id}/{team_id}",
        )
        session.add(team)
        await session.flush()
        for user, home, role in ((owner, root_id, "owner"), (member, team_id, "member")):
            session.add(
                Membership(id=new_id("mem"), org_id=org.id, user_id=user.id, home_group_id=home)
            )
            session.add(
                RoleBinding(
                    id=new_id("rb"), org_id=org.id, group_id=home, user_id=user.id, role=role
                )
            )
        sources = [(root_id, owner.id), (team_id, owner.id), (team_id, member.id)]
        keys = [
            ApiKey(
                id=new_id("key"),
                org_id=org.id,
                group_id=group_id,
                owner_user_id=user_id,
                name=f"key {index}",
                prefix="sk-sg-exact0",
                digest=secret_digest(pepper, secrets.token_hex(16)),
            )
            for index, (group_id, user_id) in enumerate(sources)
        ]
        session.add_all(keys)
        await session.flush()
        _token, secret = await issue_admin_token(session, owner, pepper=pepper)
    api = Api(client, Person(owner.id, owner.email, secret))
    return Tenant(
        org.id,
        zone,
        Actor(owner.id, owner.email),
        api,
        [(key.group_id, key.id, key.owner_user_id) for key in keys],
    )
