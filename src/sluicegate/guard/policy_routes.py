"""HTTP routes of policies under /api/v1/orgs/{org_id}/policies, and the effective policy of a
key at /api/v1/orgs/{org_id}/keys/{key_id}/policy."""

from __future__ import annotations

from fastapi import APIRouter, Response

from sluicegate.api.deps import DEFAULT_PAGE, Cursor, DbSession, Limit
from sluicegate.api.errors import CONFLICT, STANDARD_ERRORS
from sluicegate.api.pages import Page
from sluicegate.guard import policy_service as service
from sluicegate.guard.policy_schemas import (
    BindingCreate,
    BindingOut,
    KeyPolicyOut,
    PolicyCreate,
    PolicyOut,
    PolicyUpdate,
)
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(prefix="/orgs/{org_id}", tags=["policies"], responses=STANDARD_ERRORS)


@router.post("/policies", status_code=201, responses=CONFLICT)
async def create_policy(
    org_id: str, body: PolicyCreate, session: DbSession, actor: CurrentActor
) -> PolicyOut:
    """A reusable guardrail set (owners and admins), bound nowhere yet: model allow and block
    lists, an IP allowlist, rpm/tpm limits, a max_tokens cap. Null or absent: no such rule."""
    view = await service.create_policy(
        session,
        actor,
        org_id,
        name=body.name,
        description=body.description,
        allowed_models=body.allowed_models,
        blocked_models=body.blocked_models,
        ip_allowlist=body.ip_allowlist,
        rpm=body.rpm,
        tpm=body.tpm,
        max_tokens=body.max_tokens,
    )
    return PolicyOut.of(view)


@router.get("/policies")
async def list_policies(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[PolicyOut]:
    """Every policy of the org with its bindings (owners, admins and viewers)."""
    views, next_cursor = await service.list_policies(
        session, actor, org_id, cursor=cursor, limit=limit
    )
    return Page(items=[PolicyOut.of(v) for v in views], next_cursor=next_cursor)


@router.get("/policies/{policy_id}")
async def get_policy(
    org_id: str, policy_id: str, session: DbSession, actor: CurrentActor
) -> PolicyOut:
    return PolicyOut.of(await service.get_policy(session, actor, org_id, policy_id))


@router.patch("/policies/{policy_id}", responses=CONFLICT)
async def update_policy(
    org_id: str, policy_id: str, body: PolicyUpdate, session: DbSession, actor: CurrentActor
) -> PolicyOut:
    """Change any field; null clears a rule. Allowed to those who govern every target the policy
    is bound to. The proxy sees the change within a second on every worker."""
    changes = body.model_dump(exclude_unset=True)
    return PolicyOut.of(await service.update_policy(session, actor, org_id, policy_id, changes))


@router.delete("/policies/{policy_id}", status_code=204)
async def delete_policy(
    org_id: str, policy_id: str, session: DbSession, actor: CurrentActor
) -> Response:
    """Delete the policy and its bindings. Allowed to those who govern every target it is bound
    to."""
    await service.delete_policy(session, actor, org_id, policy_id)
    return Response(status_code=204)


@router.post("/policies/{policy_id}/bindings", status_code=201, responses=CONFLICT)
async def bind_policy(
    org_id: str, policy_id: str, body: BindingCreate, session: DbSession, actor: CurrentActor
) -> BindingOut:
    """Apply the policy to a group (every key below it), a member (their keys) or a key. Needs
    the owner role, or the admin role strictly above the group, over the member, or over the
    key's owner: nobody sets their own limits."""
    row = await service.bind_policy(
        session, actor, org_id, policy_id, target_type=body.target_type, target_id=body.target_id
    )
    return BindingOut.model_validate(row)


@router.delete("/policies/{policy_id}/bindings/{binding_id}", status_code=204)
async def unbind_policy(
    org_id: str, policy_id: str, binding_id: str, session: DbSession, actor: CurrentActor
) -> Response:
    await service.unbind_policy(session, actor, org_id, policy_id, binding_id)
    return Response(status_code=204)


@router.get("/keys/{key_id}/policy")
async def key_policy(
    org_id: str, key_id: str, session: DbSession, actor: CurrentActor
) -> KeyPolicyOut:
    """The effective policy of a key, exactly as the proxy applies it: every policy bound to the
    key, its owner, its groups and the org, and what they add up to (the most restrictive rule
    wins). Readable by whoever may read the key."""
    return KeyPolicyOut.of(await service.key_policy(session, actor, org_id, key_id))
