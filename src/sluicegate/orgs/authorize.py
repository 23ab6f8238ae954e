"""authorize(access, action, target): the one place where an admin permission is decided.

Roles are bound at nodes of an organization's tree (DESIGN §3). A node is named by its path,
the ids from the root down to it. "Covers N" below means "is bound at N or above it".

- owner (bound at the root only): everything in the org.
- admin bound at A: reads everything in A's subtree; manages what is strictly below A (creates
  groups under A or below, renames, moves and deletes groups below A); manages the members homed
  in A's subtree and their keys, as long as every role such a member holds is one the admin could
  grant; grants member and viewer at A or below, and admin strictly below A. It never changes A
  itself or anything above it, and never grants more than it holds.
- viewer bound at V: reads everything in V's subtree (groups, members, keys, audit).
- member bound at M: reads the groups of M's subtree, creates and manages their own keys in
  groups of that subtree, and reads their own membership.

Guardrails (budgets, policy bindings) on a scope are governed by whoever manages that scope from
above, never by the scope itself: the org (root) by owners; a group by owners and admins strictly
above it; a member by those who manage the member (an admin never governs themselves); a key by
owners and admins who manage its owner, never by the key's owner as such. So nobody raises their
own limits. Credits: owners and admins and viewers read the balance; owners and admins bound at
level <= the org's `topup_max_level` top up; only owners adjust or refund.

Routing overrides follow the guardrails: a group's override is set by owners and by admins
strictly above the group (an admin never sets the routing of its own group, whose overrides
may carry cost ceilings and compliance requirements placed on it), and read by the owners,
admins and viewers covering the group. The routing a key is served with is read by whoever
reads the key.

Alerts: rules for a subtree are managed by owners and the admins covering it, and read by its
admins and viewers too (so are the alerts raised there and their delivery log); the org's
channels are managed by owners and admins, read by viewers too, their secrets shown to nobody.
Usage (analytics, the activity feed) is read by subtree, see usage_visibility below. The usage
of one member or one key is read by those who read that member or key, and by every member when
the org opens its usage to members (`members_see_org_feed`).

A caller with no active membership in the org never gets here: loading their access answers
404, so another tenant's ids look exactly like ids that do not exist. A role too small inside
the same org is a 403 naming what the action needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from sluicegate.core.actors import Actor
from sluicegate.core.errors import PermissionDenied

Path = tuple[str, ...]
OWNER, ADMIN, MEMBER, VIEWER = "owner", "admin", "member", "viewer"


def within(node: Path, anchor: Path) -> bool:
    """`node` is `anchor` or one of its descendants."""
    return node[: len(anchor)] == anchor


def strictly_below(node: Path, anchor: Path) -> bool:
    return len(node) > len(anchor) and within(node, anchor)


@dataclass(frozen=True, slots=True)
class Binding:
    group_id: str
    path: Path
    role: str


@dataclass(frozen=True, slots=True)
class OrgAccess:
    """The caller inside one organization: who they are and every role they hold there."""

    actor: Actor
    org_id: str
    root: Path
    bindings: tuple[Binding, ...]

    @property
    def is_owner(self) -> bool:
        return any(binding.role == OWNER for binding in self.bindings)

    def holding(self, *roles: str) -> Iterator[Binding]:
        return (binding for binding in self.bindings if binding.role in roles)

    def covers(self, node: Path, *roles: str) -> bool:
        return any(within(node, binding.path) for binding in self.holding(*roles))


@dataclass(frozen=True, slots=True)
class MemberTarget:
    """A member as the rules see them: where they are homed and what they hold."""

    user_id: str
    home: Path
    bindings: tuple[Binding, ...]


@dataclass(frozen=True, slots=True)
class Grant:
    """A role at a node, about to be given (a binding, an invitation) or taken away."""

    role: str
    node: Path


@dataclass(frozen=True, slots=True)
class KeyTarget:
    """An API key in a group, owned by a member."""

    node: Path
    owner: MemberTarget


@dataclass(frozen=True, slots=True)
class TopUp:
    """A top-up of the org's credit; admins bound at this level or above may make one."""

    max_level: int


@dataclass(frozen=True, slots=True)
class UsageOf:
    """The usage of one member or one key, in an org that may open its usage to every member."""

    subject: MemberTarget | KeyTarget
    open_to_members: bool


Target = Path | MemberTarget | Grant | KeyTarget | TopUp | UsageOf | None


class Action(StrEnum):
    ORG_READ = "org.read"
    ORG_UPDATE = "org.update"
    ORG_DELETE = "org.delete"
    GROUP_READ = "group.read"
    GROUP_CREATE = "group.create"  # target: the parent
    GROUP_MANAGE = "group.manage"  # rename, move, delete; target: the group
    MEMBER_READ = "member.read"
    MEMBER_MANAGE = "member.manage"  # home group, role bindings
    MEMBER_REMOVE = "member.remove"
    ROLE_GRANT = "role.grant"  # bindings and invitations, given or taken away
    INVITATION_LIST = "invitation.list"
    KEY_CREATE = "key.create"
    KEY_READ = "key.read"
    KEY_MANAGE = "key.manage"
    AUDIT_READ = "audit.read"  # target: the node whose events are read
    AUDIT_LIST = "audit.list"  # the trail, filtered to what the caller reads
    GUARDRAIL_READ = "guardrail.read"  # budgets of a scope; target: node, member or key
    GUARDRAIL_MANAGE = "guardrail.manage"  # budgets and policy bindings of a scope
    POLICY_CREATE = "policy.create"
    POLICY_READ = "policy.read"
    CREDIT_READ = "credit.read"
    CREDIT_TOPUP = "credit.topup"  # target: TopUp
    CREDIT_ADJUST = "credit.adjust"  # adjustments and refunds
    USAGE_READ = "usage.read"  # a member's or a key's usage; target: UsageOf
    ALERT_READ = "alert.read"  # rules and alerts of a node's subtree; target: the node
    ALERT_MANAGE = "alert.manage"  # rules for a node's subtree; target: the node
    CHANNEL_READ = "channel.read"  # the org's alert channels (never their secrets)
    CHANNEL_MANAGE = "channel.manage"  # create, change, delete, rotate, test-send
    ROUTING_READ = "routing.read"  # a group's routing override; target: the group
    ROUTING_LIST = "routing.list"  # the overrides of the subtrees the caller reads
    ROUTING_MANAGE = "routing.manage"  # put or delete a group's override; target: the group


def can_grant(access: OrgAccess, role: str, node: Path) -> bool:
    if access.is_owner:
        return True
    for binding in access.holding(ADMIN):
        if role in (MEMBER, VIEWER) and within(node, binding.path):
            return True
        if role == ADMIN and strictly_below(node, binding.path):
            return True
    return False


def can_manage_member(access: OrgAccess, member: MemberTarget) -> bool:
    """Owners manage everyone. An admin manages a member homed in its subtree whose every role
    it could grant itself (so never an owner, a peer admin, or anyone above it); not itself."""
    if access.is_owner:
        return True
    if member.user_id == access.actor.user_id or not access.covers(member.home, ADMIN):
        return False
    return all(can_grant(access, held.role, held.path) for held in member.bindings)


Rule = Callable[[OrgAccess, "Target"], bool]


def _owner(access: OrgAccess, _target: Target) -> bool:
    return access.is_owner


def _member_of_org(access: OrgAccess, _target: Target) -> bool:
    return bool(access.bindings)


def _node(target: Target) -> Path:
    if not isinstance(target, tuple):
        raise TypeError(f"this action takes a node, not {target!r}")
    return target


def _member(target: Target) -> MemberTarget:
    if not isinstance(target, MemberTarget):
        raise TypeError(f"this action takes a member, not {target!r}")
    return target


def _key(target: Target) -> KeyTarget:
    if not isinstance(target, KeyTarget):
        raise TypeError(f"this action takes a key, not {target!r}")
    return target


def _grant(target: Target) -> Grant:
    if not isinstance(target, Grant):
        raise TypeError(f"this action takes a grant, not {target!r}")
    return target


def _group_read(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN, VIEWER, MEMBER)


def _group_create(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN)


def _group_manage(access: OrgAccess, target: Target) -> bool:
    node = _node(target)
    return access.is_owner or any(
        strictly_below(node, binding.path) for binding in access.holding(ADMIN)
    )


def _member_read(access: OrgAccess, target: Target) -> bool:
    member = _member(target)
    return (
        member.user_id == access.actor.user_id
        or access.is_owner
        or access.covers(member.home, ADMIN, VIEWER)
    )


def _member_manage(access: OrgAccess, target: Target) -> bool:
    return can_manage_member(access, _member(target))


def _member_remove(access: OrgAccess, target: Target) -> bool:
    member = _member(target)
    return member.user_id == access.actor.user_id or can_manage_member(access, member)


def _role_grant(access: OrgAccess, target: Target) -> bool:
    grant = _grant(target)
    return can_grant(access, grant.role, grant.node)


def _key_create(access: OrgAccess, target: Target) -> bool:
    key = _key(target)
    if key.owner.user_id == access.actor.user_id:
        return access.covers(key.node, OWNER, ADMIN, MEMBER)
    return access.is_owner or (
        access.covers(key.node, ADMIN) and can_manage_member(access, key.owner)
    )


def _key_read(access: OrgAccess, target: Target) -> bool:
    key = _key(target)
    return (
        key.owner.user_id == access.actor.user_id
        or access.is_owner
        or access.covers(key.node, ADMIN, VIEWER)
    )


def _key_manage(access: OrgAccess, target: Target) -> bool:
    key = _key(target)
    if key.owner.user_id == access.actor.user_id or access.is_owner:
        return True
    return access.covers(key.node, ADMIN) and can_manage_member(access, key.owner)


def _audit_read(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN, VIEWER)


def _guardrail_read(access: OrgAccess, target: Target) -> bool:
    if isinstance(target, MemberTarget):
        return _member_read(access, target)
    if isinstance(target, KeyTarget):
        return _key_read(access, target)
    return access.is_owner or access.covers(_node(target), ADMIN, VIEWER)


def _guardrail_manage(access: OrgAccess, target: Target) -> bool:
    if access.is_owner:
        return True
    if isinstance(target, MemberTarget):
        return can_manage_member(access, target)
    if isinstance(target, KeyTarget):
        return access.covers(target.node, ADMIN) and can_manage_member(access, target.owner)
    node = _node(target)
    return any(strictly_below(node, binding.path) for binding in access.holding(ADMIN))


def _credit_topup(access: OrgAccess, target: Target) -> bool:
    if not isinstance(target, TopUp):
        raise TypeError(f"this action takes a top-up, not {target!r}")
    # The root is level 0: a binding's level is its depth below the root.
    return access.is_owner or any(
        len(binding.path) - 1 <= target.max_level for binding in access.holding(ADMIN)
    )


def _usage_read(access: OrgAccess, target: Target) -> bool:
    if not isinstance(target, UsageOf):
        raise TypeError(f"this action takes a member's or a key's usage, not {target!r}")
    if target.open_to_members and access.bindings:
        return True
    if isinstance(target.subject, KeyTarget):
        return _key_read(access, target.subject)
    return _member_read(access, target.subject)


def _alert_read(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN, VIEWER)


def _alert_manage(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN)


def _routing_read(access: OrgAccess, target: Target) -> bool:
    return access.is_owner or access.covers(_node(target), ADMIN, VIEWER)


def _routing_manage(access: OrgAccess, target: Target) -> bool:
    node = _node(target)
    return access.is_owner or any(
        strictly_below(node, binding.path) for binding in access.holding(ADMIN)
    )


def _holds(*roles: str) -> Rule:
    def rule(access: OrgAccess, _target: Target) -> bool:
        return access.is_owner or any(access.holding(*roles))

    return rule


# Each action, the rule that decides it, and what the rule needs in words (for the 403).
RULES: dict[Action, tuple[Rule, str]] = {
    Action.ORG_READ: (_member_of_org, "membership of the organization"),
    Action.ORG_UPDATE: (_owner, "the owner role"),
    Action.ORG_DELETE: (_owner, "the owner role"),
    Action.GROUP_READ: (_group_read, "a role at this group or above it"),
    Action.GROUP_CREATE: (_group_create, "the admin role at the parent group or above it"),
    Action.GROUP_MANAGE: (
        _group_manage,
        "the owner role, or the admin role strictly above this group",
    ),
    Action.MEMBER_READ: (
        _member_read,
        "the admin or viewer role at the member's home group or above it",
    ),
    Action.MEMBER_MANAGE: (
        _member_manage,
        "the owner role, or the admin role above the member's home group and every role the "
        "member holds",
    ),
    Action.MEMBER_REMOVE: (
        _member_remove,
        "the owner role, or the admin role above the member's home group and every role the "
        "member holds",
    ),
    Action.ROLE_GRANT: (
        _role_grant,
        "the owner role, or the admin role: member and viewer at the admin's own group or "
        "below, admin strictly below it",
    ),
    Action.INVITATION_LIST: (_holds(ADMIN), "the owner or admin role"),
    Action.KEY_CREATE: (
        _key_create,
        "a member, admin or owner role at the key's group or above it (for your own key), or "
        "the admin role there over the key's owner",
    ),
    Action.KEY_READ: (
        _key_read,
        "being the key's owner, or the admin or viewer role at its group or above it",
    ),
    Action.KEY_MANAGE: (
        _key_manage,
        "being the key's owner, or the admin role at its group or above it over its owner",
    ),
    Action.AUDIT_READ: (_audit_read, "the owner, admin or viewer role at this node or above it"),
    Action.AUDIT_LIST: (_holds(ADMIN, VIEWER), "the owner, admin or viewer role"),
    Action.GUARDRAIL_READ: (
        _guardrail_read,
        "the owner role, the admin or viewer role at the scope or above it, or being the member "
        "or key owner concerned",
    ),
    Action.GUARDRAIL_MANAGE: (
        _guardrail_manage,
        "the owner role, or the admin role strictly above the group, over the member, or over "
        "the key's owner (nobody sets their own limits)",
    ),
    Action.POLICY_CREATE: (_holds(ADMIN), "the owner or admin role"),
    Action.POLICY_READ: (_holds(ADMIN, VIEWER), "the owner, admin or viewer role"),
    Action.CREDIT_READ: (_holds(ADMIN, VIEWER), "the owner, admin or viewer role"),
    Action.CREDIT_TOPUP: (
        _credit_topup,
        "the owner role, or the admin role at a level the org allows to top up (topup_max_level)",
    ),
    Action.CREDIT_ADJUST: (_owner, "the owner role"),
    Action.USAGE_READ: (
        _usage_read,
        "being the member or the key's owner, or the admin or viewer role at the member's home "
        "group or the key's group or above it (or an org that opens its usage to members)",
    ),
    Action.ALERT_READ: (_alert_read, "the owner, admin or viewer role at this node or above it"),
    Action.ALERT_MANAGE: (_alert_manage, "the owner or admin role at this node or above it"),
    Action.CHANNEL_READ: (_holds(ADMIN, VIEWER), "the owner, admin or viewer role"),
    Action.CHANNEL_MANAGE: (_holds(ADMIN), "the owner or admin role"),
    Action.ROUTING_READ: (
        _routing_read,
        "the owner role, or the admin or viewer role at this group or above it",
    ),
    Action.ROUTING_LIST: (_holds(ADMIN, VIEWER), "the owner, admin or viewer role"),
    Action.ROUTING_MANAGE: (
        _routing_manage,
        "the owner role, or the admin role strictly above this group",
    ),
}


def allowed(access: OrgAccess, action: Action, target: Target = None) -> bool:
    rule, _needs = RULES[action]
    return rule(access, target)


def authorize(access: OrgAccess, action: Action, target: Target = None) -> None:
    """Raise PermissionDenied (403) naming what `action` needs, unless the caller may do it."""
    rule, needs = RULES[action]
    if not rule(access, target):
        raise PermissionDenied(
            f"{action.value} is not allowed: it needs {needs}",
            details={"action": action.value},
        )


def readable_subtrees(access: OrgAccess, *roles: str) -> list[Path] | None:
    """The subtrees the caller reads through `roles`: None means the whole org (owners)."""
    if access.is_owner:
        return None
    return [binding.path for binding in access.holding(*roles)]


@dataclass(frozen=True, slots=True)
class UsageVisibility:
    """Whose usage a caller reads (analytics, the activity feed, exports): every request of a
    group in `subtrees` (None: the whole org), and always their own requests."""

    subtrees: tuple[Path, ...] | None
    user_id: str

    @property
    def whole_org(self) -> bool:
        return self.subtrees is None


def usage_visibility(access: OrgAccess, members_see_org_feed: bool) -> UsageVisibility:
    """Owners read the whole org; admins and viewers their subtrees; members their own usage,
    or the whole org when the org opens its feed to members (`members_see_org_feed`)."""
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    if subtrees is not None and (members_see_org_feed or any(p == access.root for p in subtrees)):
        subtrees = None
    return UsageVisibility(None if subtrees is None else tuple(subtrees), access.actor.user_id)
