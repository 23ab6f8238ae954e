"""The rules of per-group routing overrides: put (create or replace) and delete a group's
override, read it with the routing in force at the group, list an org's overrides, and the
routing a key is served with, combined by the same code the proxy runs (routing/cache.py).
Every change drops the org's cached overrides on every worker after commit (ROUTING_TOPIC).

Who may do what (orgs.authorize): a group's override is set by owners and by admins strictly
above the group (`Action.ROUTING_MANAGE`), like the group's budgets and policy bindings; owners,
admins and viewers covering the group read it; whoever reads a key reads its routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.errors import NotFound
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import ROUTING_TOPIC
from sluicegate.core.money import nanos_to_usd
from sluicegate.keys import service as keys
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    ADMIN,
    VIEWER,
    Action,
    OrgAccess,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.models import PATH_SEPARATOR
from sluicegate.providers.config import ProviderSettings
from sluicegate.routing import repository
from sluicegate.routing.cache import load_org_overrides
from sluicegate.routing.checks import check_override
from sluicegate.routing.models import RoutingOverrideRow
from sluicegate.routing.overrides import (
    CERTIFICATIONS,
    DATA_POLICIES,
    OVERRIDE_FIELDS,
    EffectiveRouting,
    RoutingOverride,
)

# The API's name of each field of RoutingOverride: money is shown in USD.
API_FIELDS = {
    name: "max_cost_per_request_usd" if name == "max_cost_per_request_nusd" else name
    for name in OVERRIDE_FIELDS
}


@dataclass(frozen=True, slots=True)
class GroupRouting:
    """A group's own override (None when it sets nothing) and the routing in force there."""

    group_id: str
    override: RoutingOverrideRow | None
    effective: EffectiveRouting


@dataclass(frozen=True, slots=True)
class KeyRouting:
    """The routing a key's requests are served with: its group chain's, combined."""

    key_id: str
    group_id: str
    effective: EffectiveRouting


async def put_override(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    group_id: str,
    override: RoutingOverride,
    *,
    providers: ProviderSettings,
    now: datetime,
) -> RoutingOverrideRow:
    """Create the group's override, or replace every field of it: a field left None is not set
    by this group and comes from the groups above."""
    access = await orgs.load_access(session, actor, org_id)
    group = await orgs.group_of(session, access, group_id)
    authorize(access, Action.ROUTING_MANAGE, orgs.path_of(group))
    override = check_override(override, providers)
    row = await repository.override_of_group(session, org_id, group.id, for_update=True)
    before = None if row is None else override_view(row)
    if row is None:
        row = RoutingOverrideRow(
            id=new_id("rto"),
            org_id=org_id,
            group_id=group.id,
            created_at=now,
            updated_at=now,
            created_by=actor.user_id,
        )
        _write(row, override)
        await repository.add(session, row)
    else:
        _write(row, override)
        row.updated_at = now
        await session.flush()
    await _record(
        session,
        actor,
        access,
        "routing_override.create" if before is None else "routing_override.update",
        row,
        before=before,
        after=override_view(row),
    )
    invalidate_after_commit(session, ROUTING_TOPIC, org_id)
    return row


async def delete_override(session: AsyncSession, actor: Actor, org_id: str, group_id: str) -> None:
    """Remove the group's override: every field comes from the groups above again. 404 when the
    group sets none."""
    access = await orgs.load_access(session, actor, org_id)
    group = await orgs.group_of(session, access, group_id)
    authorize(access, Action.ROUTING_MANAGE, orgs.path_of(group))
    row = await repository.override_of_group(session, org_id, group.id, for_update=True)
    if row is None:
        raise NotFound(f"group {group.id} has no routing override", details={"field": "group_id"})
    await _record(session, actor, access, "routing_override.delete", row, before=override_view(row))
    await repository.delete_row(session, row)
    invalidate_after_commit(session, ROUTING_TOPIC, org_id)


async def group_routing(
    session: AsyncSession, actor: Actor, org_id: str, group_id: str
) -> GroupRouting:
    """The group's own override and the routing in force there (its own fields and those it
    inherits, with the group each comes from)."""
    access = await orgs.load_access(session, actor, org_id)
    group = await orgs.group_of(session, access, group_id)
    chain = orgs.path_of(group)
    authorize(access, Action.ROUTING_READ, chain)
    snapshot = await load_org_overrides(session, org_id)
    row = await repository.override_of_group(session, org_id, group.id)
    return GroupRouting(group.id, row, snapshot.for_chain(chain))


async def list_overrides(
    session: AsyncSession, actor: Actor, org_id: str, *, cursor: str | None, limit: int
) -> tuple[list[RoutingOverrideRow], str | None]:
    """The overrides of the org's live groups the caller reads: all of them for owners, those
    of the subtrees an admin or viewer covers."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.ROUTING_LIST)
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    readable = None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees]
    return await repository.list_overrides(
        session, org_id, readable=readable, cursor=cursor, limit=limit
    )


async def key_routing(session: AsyncSession, actor: Actor, org_id: str, key_id: str) -> KeyRouting:
    """What the proxy applies to the key's requests: the overrides along its group chain,
    combined by `OrgOverrides.for_chain`, the very function the proxy calls, from the
    overrides as they are in the database now. Readable by whoever may read the key."""
    access = await orgs.load_access(session, actor, org_id)
    key, target = await keys.key_and_target(session, access, key_id)
    authorize(access, Action.KEY_READ, target)
    snapshot = await load_org_overrides(session, org_id)
    return KeyRouting(key.id, key.group_id, snapshot.for_chain(target.node))


# --- shapes --------------------------------------------------------------------------------------


def fields_view(override: RoutingOverride) -> dict[str, Any]:
    """The override's fields by their API names, as JSON: lists, the data policies and
    certifications in the order the API lists them, money as a decimal USD string."""
    ceiling = override.max_cost_per_request_nusd

    def ordered(values: frozenset[str] | None, order: tuple[str, ...]) -> list[str] | None:
        return None if values is None else [v for v in order if v in values]

    def listed(values: tuple[str, ...] | None) -> list[str] | None:
        return None if values is None else list(values)

    return {
        "provider_order": listed(override.provider_order),
        "allowed_providers": listed(override.allowed_providers),
        "ignored_providers": listed(override.ignored_providers),
        "required_policies": ordered(override.required_policies, DATA_POLICIES),
        "required_certifications": ordered(override.required_certifications, CERTIFICATIONS),
        "allowed_regions": listed(override.allowed_regions),
        "fallbacks": listed(override.fallbacks),
        "max_cost_per_request_usd": None if ceiling is None else nanos_to_usd(ceiling),
        "on_cost_exceeded": override.on_cost_exceeded,
    }


def source_view(routing: EffectiveRouting) -> dict[str, str]:
    """Which group set each field in force, by the fields' API names."""
    return {API_FIELDS[name]: group_id for name, group_id in routing.source.items()}


def override_view(row: RoutingOverrideRow) -> dict[str, Any]:
    """What the audit trail keeps of an override."""
    return {"group_id": row.group_id, **fields_view(row.as_override())}


def _write(row: RoutingOverrideRow, override: RoutingOverride) -> None:
    view = fields_view(override)
    row.provider_order = view["provider_order"]
    row.allowed_providers = view["allowed_providers"]
    row.ignored_providers = view["ignored_providers"]
    row.required_policies = view["required_policies"]
    row.required_certifications = view["required_certifications"]
    row.allowed_regions = view["allowed_regions"]
    row.fallbacks = view["fallbacks"]
    row.max_cost_per_request_nusd = override.max_cost_per_request_nusd
    row.on_cost_exceeded = override.on_cost_exceeded


async def _record(
    session: AsyncSession,
    actor: Actor,
    access: OrgAccess,
    action: str,
    row: RoutingOverrideRow,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """The audit event of a change to a group's override, filed under that group, so the
    admins and viewers of its subtree see it."""
    await record_action(
        session,
        actor,
        org_id=access.org_id,
        action=action,
        target_type="routing_override",
        target_id=row.id,
        group_id=row.group_id,
        before=before,
        after=after,
    )
