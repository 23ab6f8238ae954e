"""Invariants of orgs.authorize over random trees and role bindings (hypothesis): nobody but an
owner grants owner, an admin never manages its own node or anything above it, nobody grants more
than they hold, and holding one more role never takes a permission away."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.core.actors import Actor
from sluicegate.orgs.authorize import (
    ADMIN,
    OWNER,
    Action,
    Binding,
    Grant,
    KeyTarget,
    MemberTarget,
    OrgAccess,
    Path,
    TopUp,
    UsageOf,
    allowed,
    can_grant,
    can_manage_member,
    strictly_below,
    within,
)

ROOT: Path = ("r",)
ROLES = ("owner", "admin", "member", "viewer")
ME = "usr_me"


@st.composite
def nodes(draw: st.DrawFn) -> Path:
    """A node of a small tree (fan-out 3, depth up to 3), so random nodes often relate."""
    depth = draw(st.integers(0, 3))
    return ROOT + tuple(f"g{draw(st.integers(0, 2))}" for _ in range(depth))


@st.composite
def bindings(draw: st.DrawFn) -> Binding:
    role = draw(st.sampled_from(ROLES))
    path = ROOT if role == OWNER else draw(nodes())
    return Binding(path[-1], path, role)


def access_of(held: list[Binding]) -> OrgAccess:
    return OrgAccess(Actor(user_id=ME, email="me@example.com"), "org", ROOT, tuple(held))


members = st.builds(
    lambda user, home, held: MemberTarget(user, home, tuple(held)),
    st.sampled_from(["usr_a", "usr_b", ME]),
    nodes(),
    st.lists(bindings(), max_size=3),
)
held_roles = st.lists(bindings(), max_size=4)


@settings(max_examples=500)
@given(held_roles, nodes(), st.sampled_from(ROLES))
def test_only_owners_grant_owner_and_admins_grant_only_below_what_they_hold(
    held: list[Binding], node: Path, role: str
) -> None:
    access = access_of(held)
    if access.is_owner or not can_grant(access, role, node):
        return
    assert role != OWNER
    admin_at = [b.path for b in held if b.role == ADMIN]
    if role == ADMIN:
        assert any(strictly_below(node, path) for path in admin_at)
    else:
        assert any(within(node, path) for path in admin_at)


@settings(max_examples=500)
@given(held_roles, nodes())
def test_an_admin_never_manages_its_own_node_or_above(held: list[Binding], node: Path) -> None:
    access = access_of(held)
    if access.is_owner or not allowed(access, Action.GROUP_MANAGE, node):
        return
    # Allowed only through an admin role strictly above the node: never its own, nor below.
    assert any(strictly_below(node, b.path) for b in held if b.role == ADMIN)


@settings(max_examples=500)
@given(held_roles, members)
def test_admins_never_manage_owners_themselves_or_anyone_holding_more(
    held: list[Binding], member: MemberTarget
) -> None:
    access = access_of(held)
    if access.is_owner or not can_manage_member(access, member):
        return
    assert member.user_id != ME
    assert all(b.role != OWNER for b in member.bindings)
    assert all(can_grant(access, b.role, b.path) for b in member.bindings)


@settings(max_examples=1000)
@given(held_roles, st.one_of(nodes(), members, st.builds(KeyTarget, nodes(), members)))
def test_nobody_but_an_owner_governs_their_own_limits(
    held: list[Binding], target: Path | MemberTarget | KeyTarget
) -> None:
    """Budgets and policy bindings are set from strictly above the scope: never on one's own
    node or above it, never on oneself, never on one's own key."""
    access = access_of(held)
    if access.is_owner or not allowed(access, Action.GUARDRAIL_MANAGE, target):
        return
    if isinstance(target, MemberTarget):
        assert target.user_id != ME
    elif isinstance(target, KeyTarget):
        assert target.owner.user_id != ME
    else:
        assert any(strictly_below(target, b.path) for b in held if b.role == ADMIN)


@settings(max_examples=500)
@given(held_roles, nodes())
def test_an_admin_never_sets_the_routing_of_its_own_group_or_above(
    held: list[Binding], node: Path
) -> None:
    """A group's routing override (cost ceilings, compliance requirements among its fields) is
    set from strictly above the group, as its budgets are."""
    access = access_of(held)
    if access.is_owner or not allowed(access, Action.ROUTING_MANAGE, node):
        return
    assert any(strictly_below(node, b.path) for b in held if b.role == ADMIN)


TARGETS = {
    Action.ORG_READ: st.none(),
    Action.ORG_UPDATE: st.none(),
    Action.ORG_DELETE: st.none(),
    Action.GROUP_READ: nodes(),
    Action.GROUP_CREATE: nodes(),
    Action.GROUP_MANAGE: nodes(),
    Action.MEMBER_READ: members,
    Action.MEMBER_MANAGE: members,
    Action.MEMBER_REMOVE: members,
    Action.ROLE_GRANT: st.builds(Grant, st.sampled_from(ROLES), nodes()),
    Action.INVITATION_LIST: st.none(),
    Action.AUDIT_LIST: st.none(),
    Action.KEY_CREATE: st.builds(KeyTarget, nodes(), members),
    Action.KEY_READ: st.builds(KeyTarget, nodes(), members),
    Action.KEY_MANAGE: st.builds(KeyTarget, nodes(), members),
    Action.AUDIT_READ: nodes(),
    Action.GUARDRAIL_READ: st.one_of(nodes(), members, st.builds(KeyTarget, nodes(), members)),
    Action.GUARDRAIL_MANAGE: st.one_of(nodes(), members, st.builds(KeyTarget, nodes(), members)),
    Action.POLICY_CREATE: st.none(),
    Action.POLICY_READ: st.none(),
    Action.CREDIT_READ: st.none(),
    Action.CREDIT_TOPUP: st.builds(TopUp, st.integers(0, 3)),
    Action.CREDIT_ADJUST: st.none(),
    Action.USAGE_READ: st.builds(
        UsageOf, st.one_of(members, st.builds(KeyTarget, nodes(), members)), st.booleans()
    ),
    Action.ALERT_READ: nodes(),
    Action.ALERT_MANAGE: nodes(),
    Action.CHANNEL_READ: st.none(),
    Action.CHANNEL_MANAGE: st.none(),
    Action.ROUTING_READ: nodes(),
    Action.ROUTING_LIST: st.none(),
    Action.ROUTING_MANAGE: nodes(),
}


def test_every_action_has_a_target_strategy() -> None:
    assert set(TARGETS) == set(Action)


@settings(max_examples=1000)
@given(st.data(), held_roles, bindings())
def test_holding_one_more_role_never_takes_a_permission_away(
    data: st.DataObject, held: list[Binding], extra: Binding
) -> None:
    action = data.draw(st.sampled_from(list(Action)))
    target = data.draw(TARGETS[action])
    if allowed(access_of(held), action, target):
        assert allowed(access_of([*held, extra]), action, target)


@settings(max_examples=300)
@given(st.data(), held_roles)
def test_no_role_at_all_allows_nothing(data: st.DataObject, held: list[Binding]) -> None:
    action = data.draw(st.sampled_from(list(Action)))
    target = data.draw(TARGETS[action])
    subject = target.subject if isinstance(target, UsageOf) else target
    mine = isinstance(subject, KeyTarget) and subject.owner.user_id == ME
    me = isinstance(subject, MemberTarget) and subject.user_id == ME
    if not (mine or me):
        assert not allowed(access_of([]), action, target)
