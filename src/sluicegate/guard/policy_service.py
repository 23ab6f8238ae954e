"""The rules of policies: reusable guardrail sets (model allow and block lists, an IP allowlist,
rpm/tpm limits, a max_tokens cap), their bindings to groups, members and keys, and the effective
policy of a key, computed by the same code the proxy runs. Every change drops the org's cached
rules on every worker after commit.

Who may do what: any owner or admin creates a policy; changing or deleting one needs the right to
govern every target it is bound to (so an admin never loosens a rule placed above them), and
binding or unbinding needs the right to govern that target (`Action.GUARDRAIL_MANAGE`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import GUARD_TOPIC
from sluicegate.guard import policy_checks as checks
from sluicegate.guard import repository
from sluicegate.guard.models import Policy, PolicyBinding
from sluicegate.guard.policy import PolicyRule
from sluicegate.guard.rules import load_org_rules
from sluicegate.keys import service as keys
from sluicegate.orgs import membership_service
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    Action,
    KeyTarget,
    MemberTarget,
    OrgAccess,
    Path,
    authorize,
)

RULE_FIELDS = ("allowed_models", "blocked_models", "ip_allowlist", "rpm", "tpm", "max_tokens")

# What a policy can govern: a group (and every key below it), a member, a key.
GovernedTarget = Path | MemberTarget | KeyTarget


@dataclass(frozen=True, slots=True)
class PolicyView:
    """A policy with its bindings."""

    policy: Policy
    bindings: tuple[PolicyBinding, ...]


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """A policy that applies to a key, as the proxy loaded it, and the target it is bound to."""

    rule: PolicyRule
    target_type: str
    target_id: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The rpm and tpm one scope of the key's chain allows (the smallest of its policies')."""

    scope: str  # key | member | group | org
    scope_id: str
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """The effective policy of a key: every policy along its chain, narrowest scope first."""

    key_id: str
    applied: tuple[AppliedPolicy, ...]
    max_tokens: AppliedPolicy | None
    rate_limits: tuple[RateLimit, ...]

    @property
    def allow_lists(self) -> list[AppliedPolicy]:
        """The policies with an allow-list: a model must match every one of them."""
        return [a for a in self.applied if a.rule.allowed_models is not None]

    @property
    def blocked_models(self) -> list[str]:
        """Every pattern any of the policies blocks."""
        return list(dict.fromkeys(p for a in self.applied for p in a.rule.blocked_models))

    @property
    def ip_allowlists(self) -> list[AppliedPolicy]:
        """The policies with an IP allowlist: a caller must be inside every one of them."""
        return [a for a in self.applied if a.rule.ip_allowlist is not None]


# --- policies ----------------------------------------------------------------------------------


async def create_policy(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    name: str,
    description: str | None = None,
    allowed_models: list[str] | None = None,
    blocked_models: list[str] | None = None,
    ip_allowlist: list[str] | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    max_tokens: int | None = None,
) -> PolicyView:
    """A new policy, bound nowhere yet. A policy without any rule is allowed: it governs
    nothing until rules are added."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.POLICY_CREATE)
    label = orgs.clean_name(name)
    await _name_is_free(session, org_id, label)
    policy = Policy(
        id=new_id("pol"),
        org_id=org_id,
        name=label,
        description=checks.check_description(description),
        allowed_models=checks.check_patterns("allowed_models", allowed_models),
        blocked_models=checks.check_patterns("blocked_models", blocked_models),
        ip_allowlist=checks.check_networks(ip_allowlist),
        rpm=checks.check_limit("rpm", rpm),
        tpm=checks.check_limit("tpm", tpm),
        max_tokens=checks.check_limit("max_tokens", max_tokens),
    )
    await repository.add(session, policy)
    view = PolicyView(policy, ())
    await _record(session, actor, access, "policy.create", policy, after=policy_view(view))
    invalidate_after_commit(session, GUARD_TOPIC, org_id)
    return view


async def get_policy(
    session: AsyncSession, actor: Actor, org_id: str, policy_id: str
) -> PolicyView:
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.POLICY_READ)
    policy = await _policy(session, access, policy_id)
    return PolicyView(
        policy, tuple(await repository.bindings_of(session, policy.org_id, [policy.id]))
    )


async def list_policies(
    session: AsyncSession, actor: Actor, org_id: str, *, cursor: str | None, limit: int
) -> tuple[list[PolicyView], str | None]:
    """Every policy of the org (owners, admins and viewers read them all), with its bindings."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.POLICY_READ)
    policies, next_cursor = await repository.list_policies(
        session, org_id, cursor=cursor, limit=limit
    )
    bindings: dict[str, list[PolicyBinding]] = {}
    for row in await repository.bindings_of(session, org_id, [p.id for p in policies]):
        bindings.setdefault(row.policy_id, []).append(row)
    views = [PolicyView(p, tuple(bindings.get(p.id, ()))) for p in policies]
    return views, next_cursor


async def update_policy(
    session: AsyncSession, actor: Actor, org_id: str, policy_id: str, changes: dict[str, Any]
) -> PolicyView:
    """Change `name`, `description` or any rule; a rule set to None is cleared. Only the fields
    present in `changes` change. Needs the right to govern every target the policy is bound to."""
    access = await orgs.load_access(session, actor, org_id)
    policy, bindings = await _governed_policy(session, access, policy_id)
    before = policy_view(PolicyView(policy, bindings))
    if changes.get("name") is not None:
        label = orgs.clean_name(changes["name"])
        if label != policy.name:
            await _name_is_free(session, org_id, label)
            policy.name = label
    if "description" in changes:
        policy.description = checks.check_description(changes["description"])
    if "allowed_models" in changes:
        policy.allowed_models = checks.check_patterns("allowed_models", changes["allowed_models"])
    if "blocked_models" in changes:
        policy.blocked_models = checks.check_patterns("blocked_models", changes["blocked_models"])
    if "ip_allowlist" in changes:
        policy.ip_allowlist = checks.check_networks(changes["ip_allowlist"])
    if "rpm" in changes:
        policy.rpm = checks.check_limit("rpm", changes["rpm"])
    if "tpm" in changes:
        policy.tpm = checks.check_limit("tpm", changes["tpm"])
    if "max_tokens" in changes:
        policy.max_tokens = checks.check_limit("max_tokens", changes["max_tokens"])
    await session.flush()
    view = PolicyView(policy, bindings)
    await _record(
        session, actor, access, "policy.update", policy, before=before, after=policy_view(view)
    )
    invalidate_after_commit(session, GUARD_TOPIC, org_id)
    return view


async def delete_policy(session: AsyncSession, actor: Actor, org_id: str, policy_id: str) -> None:
    """Delete the policy and every binding of it. Needs the right to govern every target it is
    bound to."""
    access = await orgs.load_access(session, actor, org_id)
    policy, bindings = await _governed_policy(session, access, policy_id)
    before = policy_view(PolicyView(policy, bindings))
    await _record(session, actor, access, "policy.delete", policy, before=before)
    await repository.delete_bindings_of(session, policy.org_id, policy.id)
    await repository.delete_row(session, policy)
    invalidate_after_commit(session, GUARD_TOPIC, org_id)


# --- bindings ----------------------------------------------------------------------------------


async def bind_policy(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    policy_id: str,
    *,
    target_type: str,
    target_id: str,
) -> PolicyBinding:
    """Apply the policy to a live group (and every key below it), an active member or a key that
    is not deleted. Needs the right to govern that target; 409 when it is already bound there."""
    access = await orgs.load_access(session, actor, org_id)
    policy = await _policy(session, access, policy_id)
    target = await _live_target(session, access, target_type, target_id)
    authorize(access, Action.GUARDRAIL_MANAGE, target)
    if (
        await repository.binding(session, policy.org_id, policy.id, target_type, target_id)
        is not None
    ):
        raise Conflict(
            f"policy {policy.id} is already bound to {target_type} {target_id}",
            details={"field": "target_id"},
        )
    row = PolicyBinding(
        id=new_id("pb"),
        org_id=org_id,
        policy_id=policy.id,
        target_type=target_type,
        target_id=target_id,
    )
    await repository.add(session, row)
    await _record(
        session,
        actor,
        access,
        "policy.bind",
        policy,
        group_id=_node_of(target)[-1],
        after=binding_view(row),
    )
    invalidate_after_commit(session, GUARD_TOPIC, org_id)
    return row


async def unbind_policy(
    session: AsyncSession, actor: Actor, org_id: str, policy_id: str, binding_id: str
) -> None:
    """Remove one binding. Needs the right to govern its target."""
    access = await orgs.load_access(session, actor, org_id)
    policy = await _policy(session, access, policy_id)
    row = await repository.binding_of_policy(session, org_id, policy.id, binding_id)
    if row is None:
        raise NotFound(f"binding {binding_id} of policy {policy.id} not found")
    target = await _bound_target(session, access, row)
    authorize(access, Action.GUARDRAIL_MANAGE, target)
    await _record(
        session,
        actor,
        access,
        "policy.unbind",
        policy,
        group_id=_node_of(target)[-1],
        before=binding_view(row),
    )
    await repository.delete_row(session, row)
    invalidate_after_commit(session, GUARD_TOPIC, org_id)


# --- the effective policy of a key -------------------------------------------------------------


async def key_policy(session: AsyncSession, actor: Actor, org_id: str, key_id: str) -> KeyPolicy:
    """What the proxy applies to the key's requests: resolved by `OrgRules.for_key`, the very
    function the proxy calls, from the rules as they are in the database now."""
    access = await orgs.load_access(session, actor, org_id)
    key, target = await keys.key_and_target(session, access, key_id)
    authorize(access, Action.KEY_READ, target)
    rules = await load_org_rules(session, org_id)
    if rules is None:
        raise NotFound(f"organization {org_id} not found")
    resolved = rules.for_key(key.id, key.owner_user_id, target.node)
    bound = resolved.policy.bound
    applied = tuple(AppliedPolicy(b.rule, b.target_type, b.target_id) for b in bound)
    cap = resolved.policy.max_tokens
    rates = []
    for scope in resolved.scopes:
        if scope.rates:
            rpm = next((r.limit for r in scope.rates if not r.per_token), None)
            tpm = next((r.limit for r in scope.rates if r.per_token), None)
            rates.append(RateLimit(scope.kind, scope.id, rpm, tpm))
    return KeyPolicy(
        key_id=key.id,
        applied=applied,
        max_tokens=applied[bound.index(cap)] if cap is not None else None,
        rate_limits=tuple(rates),
    )


# --- helpers ---------------------------------------------------------------------------------


def policy_view(view: PolicyView) -> dict[str, Any]:
    """What the audit trail keeps of a policy."""
    policy = view.policy
    return {
        "name": policy.name,
        "description": policy.description,
        **{field: getattr(policy, field) for field in RULE_FIELDS},
        "bindings": [binding_view(b) for b in view.bindings],
    }


def binding_view(row: PolicyBinding) -> dict[str, Any]:
    return {"id": row.id, "target_type": row.target_type, "target_id": row.target_id}


async def _policy(session: AsyncSession, access: OrgAccess, policy_id: str) -> Policy:
    policy = await repository.policy_in_org(session, access.org_id, policy_id)
    if policy is None:
        raise NotFound(f"policy {policy_id} not found")
    return policy


async def _governed_policy(
    session: AsyncSession, access: OrgAccess, policy_id: str
) -> tuple[Policy, tuple[PolicyBinding, ...]]:
    """A policy the caller may change: they may create policies and govern every target the
    policy is bound to, so nobody loosens (or tightens) a rule placed above them."""
    policy = await _policy(session, access, policy_id)
    authorize(access, Action.POLICY_CREATE)
    bindings = tuple(await repository.bindings_of(session, policy.org_id, [policy.id]))
    for row in bindings:
        authorize(access, Action.GUARDRAIL_MANAGE, await _bound_target(session, access, row))
    return policy, bindings


async def _live_target(
    session: AsyncSession, access: OrgAccess, target_type: str, target_id: str
) -> GovernedTarget:
    """The target of a new binding: a live group, an active member, a key not deleted; 404 for
    anything else, another org's ids included."""
    details = {"field": "target_id"}
    if target_type == "group":
        return orgs.path_of(await orgs.group_of(session, access, target_id, field="target_id"))
    if target_type == "member":
        member = await membership_service.active_member_target(session, access.org_id, target_id)
        if member is None:
            raise NotFound(f"member {target_id} not found", details=details)
        return member
    if target_type == "key":
        try:
            key, target = await keys.key_and_target(session, access, target_id)
        except NotFound:
            key = None
        if key is None or key.status == "revoked":
            raise NotFound(f"key {target_id} not found", details=details)
        return target
    raise InvalidInput(
        "target_type: must be 'group', 'member' or 'key'", details={"field": "target_type"}
    )


async def _bound_target(
    session: AsyncSession, access: OrgAccess, row: PolicyBinding
) -> GovernedTarget:
    """The target of an existing binding as the rules judge it, whatever became of it since (a
    deleted group, a removed member, a revoked key). One that is gone altogether is judged as
    the org root: only owners touch it."""
    if row.target_type == "group":
        group = (await orgs.groups_of(session, access, [row.target_id])).get(row.target_id)
        return orgs.path_of(group) if group is not None else access.root
    if row.target_type == "member":
        member = await membership_service.member_target(session, access.org_id, row.target_id)
        return member if member is not None else access.root
    try:
        return (await keys.key_and_target(session, access, row.target_id))[1]
    except NotFound:
        return access.root


def _node_of(target: GovernedTarget) -> Path:
    """Where a target sits in the tree: a member's home, a key's group."""
    if isinstance(target, MemberTarget):
        return target.home
    if isinstance(target, KeyTarget):
        return target.node
    return target


async def _name_is_free(session: AsyncSession, org_id: str, name: str) -> None:
    if await repository.policy_named(session, org_id, name) is not None:
        raise Conflict(
            f"name: a policy named '{name}' already exists in this organization",
            details={"field": "name"},
        )


async def _record(
    session: AsyncSession,
    actor: Actor,
    access: OrgAccess,
    action: str,
    policy: Policy,
    *,
    group_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """The audit event of a change to a policy: a policy belongs to the org (its root group);
    a binding to the group of its target, so the admins of that subtree see it."""
    await record_action(
        session,
        actor,
        org_id=access.org_id,
        action=action,
        target_type="policy",
        target_id=policy.id,
        group_id=group_id or access.root[0],
        before=before,
        after=after,
    )
