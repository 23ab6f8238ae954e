"""Every org-scoped admin endpoint x each role at each position relative to the endpoint's target
node gets exactly the outcome in the table below.

The world of every cell is built fresh (org A and org B), so no cell sees another's changes:

    org A:  R (root, level 0)
            └─ D1 (1)
               ├─ T (2) ── P (3), P2 (3)
               └─ T2 (2)
    org B:  RB ── DB ── TB      (the "other" column: the caller holds the role in org B only)

S, the subject, is a member homed at T (member at T, viewer at P) and owns key K in T. I is a
pending invitation (member at T); E an audit event about K (at T). The caller is bound with the
column's role at the column's position relative to the row's target node:

    target R: same = R,  desc = D1                  (R has no ancestor or sibling)
    target T: same = T,  anc = D1, desc = P, sib = T2
    target P: same = P,  anc = T,  sib = P2         (P has no descendant)

Cells: ok = 2xx; ok+ / ok- = 2xx and the row's item is / is not in the list; a number = that
status; - = no such position. Owners are bound at the root only.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sluicegate.alerts.channel_config import channel_box, seal_config
from sluicegate.alerts.models import Alert, AlertChannel, AlertRule
from sluicegate.audit.service import record
from sluicegate.core.digests import secret_digest
from sluicegate.core.ids import new_id
from sluicegate.guard.models import Budget, Policy, PolicyBinding
from sluicegate.identity.models import User
from sluicegate.identity.service import issue_admin_token
from sluicegate.keys.models import ApiKey
from sluicegate.metering.ledger import LedgerEntry
from sluicegate.metering.writer import store_usage
from sluicegate.orgs.models import Group, Invitation, Membership, Organization, RoleBinding
from sluicegate.routing.models import RoutingOverrideRow
from sluicegate.runtime import Runtime
from tests.admin import org_scoped_routes

MATRIX = """
                   owner    | admin                 | viewer                | member
                   root oth | same anc desc sib oth | same anc desc sib oth | same anc desc sib oth
org.get            ok   404 | ok   -   ok   -   404 | ok   -   ok   -   404 | ok   -   ok   -   404
org.update         ok   404 | 403  -   403  -   404 | 403  -   403  -   404 | 403  -   403  -   404
org.delete         ok   404 | 403  -   403  -   404 | 403  -   403  -   404 | 403  -   403  -   404
groups.list        ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404
group.create       ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
group.get          ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | ok   ok  403  403 404
group.rename       ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
group.move         ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
group.delete       ok   404 | 403  ok  -    403 404 | 403  403 -    403 404 | 403  403 -    403 404
members.list       ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
member.get         ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
member.rehome      ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
member.remove      ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
role.set           ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
role.remove        ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
invitation.create  ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
invitations.list   ok+  404 | ok+  ok+ ok-  ok- 404 | 403  403 403  403 404 | 403  403 403  403 404
invitation.revoke  ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
key.create.member  ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
key.create.own     ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | ok   ok  403  403 404
keys.list          ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
key.get            ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
key.update         ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
key.rotate         ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
key.delete         ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
audit.list         ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | 403  403 403  403 404
audit.verify       ok   404 | ok   -   403  -   404 | ok   -   403  -   404 | 403  -   403  -   404
credits.get        ok   404 | ok   -   ok   -   404 | ok   -   ok   -   404 | 403  -   403  -   404
credits.topup      ok   404 | ok   -   ok   -   404 | 403  -   403  -   404 | 403  -   403  -   404
credits.adjust     ok   404 | 403  -   403  -   404 | 403  -   403  -   404 | 403  -   403  -   404
ledger.list        ok+  404 | ok+  -   ok+  -   404 | ok+  -   ok+  -   404 | 403  -   403  -   404
ledger.csv         ok   404 | ok   -   ok   -   404 | ok   -   ok   -   404 | 403  -   403  -   404
policy.create      ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
policies.list      ok+  404 | ok+  ok+ ok+  ok+ 404 | ok+  ok+ ok+  ok+ 404 | 403  403 403  403 404
policy.get         ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | 403  403 403  403 404
policy.update      ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
policy.delete      ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
policy.bind        ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
policy.unbind      ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
key.policy         ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
routing.put        ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
routing.get        ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
routing.delete     ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
routing.list       ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | 403  403 403  403 404
key.routing        ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
budget.put.org     ok   404 | 403  -   403  -   404 | 403  -   403  -   404 | 403  -   403  -   404
budget.put.group   ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
budget.put.member  ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
budget.put.key     ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
budgets.list       ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
budget.get         ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
budget.delete      ok   404 | 403  ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
activity.list      ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
activity.csv       ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
insights.anomalies ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
insights.summary   ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.activity     ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.activity.csv ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.activity.pdf ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.members      ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
stats.members.csv  ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.members.pdf  ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404
stats.member       ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
stats.member.csv   ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
stats.member.pdf   ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
stats.key          ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
stats.key.csv      ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
stats.key.pdf      ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
channels.list      ok+  404 | ok+  ok+ ok+  ok+ 404 | ok+  ok+ ok+  ok+ 404 | 403  403 403  403 404
channel.create     ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
channel.get        ok   404 | ok   ok  ok   ok  404 | ok   ok  ok   ok  404 | 403  403 403  403 404
channel.update     ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
channel.rotate     ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
channel.test       ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
channel.delete     ok   404 | ok   ok  ok   ok  404 | 403  403 403  403 404 | 403  403 403  403 404
rules.list         ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
rule.create        ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
rule.get           ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
rule.update        ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
rule.delete        ok   404 | ok   ok  403  403 404 | 403  403 403  403 404 | 403  403 403  403 404
alerts.list        ok+  404 | ok+  ok+ ok-  ok- 404 | ok+  ok+ ok-  ok- 404 | ok-  ok- ok-  ok- 404
alert.get          ok   404 | ok   ok  403  403 404 | ok   ok  403  403 404 | 403  403 403  403 404
"""

COLUMNS = [("owner", "root"), ("owner", "oth")] + [
    (role, position)
    for role in ("admin", "viewer", "member")
    for position in ("same", "anc", "desc", "sib", "oth")
]


def parse(matrix: str) -> dict[str, list[str]]:
    rows = {}
    for line in matrix.strip().splitlines()[2:]:
        name, *cells = line.replace("|", " ").split()
        assert len(cells) == len(COLUMNS), f"row {name} has {len(cells)} cells"
        rows[name] = cells
    return rows


EXPECTED = parse(MATRIX)

# Where each position lies relative to a row's target node.
POSITIONS = {
    "R": {"same": "R", "desc": "D1"},
    "T": {"same": "T", "anc": "D1", "desc": "P", "sib": "T2"},
    "P": {"same": "P", "anc": "T", "sib": "P2"},
}
OTHER_ORG_NODE = {"owner": "RB", "admin": "TB", "viewer": "TB", "member": "TB"}


@dataclass
class World:
    org: str  # "/api/v1/orgs/<org A id>"
    nodes: dict[str, str]
    subject: str
    key: str
    invitation: str
    event: str
    caller_token: str
    # --- policies: a policy bound to T (and that binding), and one bound nowhere. The defaults
    # are the route's path parameters, which the coverage test reads; build_world sets ids.
    policy: str = "{policy_id}"
    policy_binding: str = "{binding_id}"
    free_policy: str = "{policy_id}"
    # --- end policies
    # --- credits: a top-up in org A's ledger (the ledger rows' listed item)
    ledger_entry: str = ""
    # --- end credits
    # --- routing: the routing override of group T (the list's item)
    routing_override: str = ""
    # --- end routing
    # --- budgets: a budget on group T
    budget: str = "{budget_id}"
    # --- end budgets
    # --- activity: a request of S's key K at T (the feed's listed item)
    usage_event: str = ""
    # --- end activity
    # --- alerts: a webhook channel (org-wide), a rule scoped to T, an alert raised at T
    channel: str = "{channel_id}"
    rule: str = "{rule_id}"
    alert: str = "{alert_id}"
    # --- end alerts


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    item: str | None = None  # for lists: the id whose presence the cell states


def _calls() -> dict[str, tuple[str, Callable[[World], Call]]]:
    def g(w: World, name: str) -> str:
        return w.nodes[name]

    every = {"limit": 200}
    return {
        "org.get": ("R", lambda w: Call("GET", w.org)),
        "org.update": ("R", lambda w: Call("PATCH", w.org, {"name": "Renamed"})),
        "org.delete": ("R", lambda w: Call("DELETE", w.org)),
        "groups.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/groups", params=every, item=g(w, "T")),
        ),
        "group.create": (
            "T",
            lambda w: Call("POST", f"{w.org}/groups", {"name": "new", "parent_id": g(w, "T")}),
        ),
        "group.get": ("T", lambda w: Call("GET", f"{w.org}/groups/{g(w, 'T')}")),
        "group.rename": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/groups/{g(w, 'T')}", {"name": "renamed"}),
        ),
        "group.move": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/groups/{g(w, 'T')}", {"parent_id": g(w, "T2")}),
        ),
        "group.delete": ("P", lambda w: Call("DELETE", f"{w.org}/groups/{g(w, 'P')}")),
        "members.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/members", params=every, item=w.subject),
        ),
        "member.get": ("T", lambda w: Call("GET", f"{w.org}/members/{w.subject}")),
        "member.rehome": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/members/{w.subject}", {"home_group_id": g(w, "P")}),
        ),
        "member.remove": ("T", lambda w: Call("DELETE", f"{w.org}/members/{w.subject}")),
        "role.set": (
            "T",
            lambda w: Call(
                "PUT",
                f"{w.org}/members/{w.subject}/roles",
                {"group_id": g(w, "P"), "role": "admin"},
            ),
        ),
        "role.remove": (
            "T",
            lambda w: Call("DELETE", f"{w.org}/members/{w.subject}/roles/{g(w, 'P')}"),
        ),
        "invitation.create": (
            "T",
            lambda w: Call(
                "POST",
                f"{w.org}/invitations",
                {
                    "email": f"new-{secrets.token_hex(4)}@example.com",
                    "role": "member",
                    "group_id": g(w, "T"),
                },
            ),
        ),
        "invitations.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/invitations", params=every, item=w.invitation),
        ),
        "invitation.revoke": (
            "T",
            lambda w: Call("DELETE", f"{w.org}/invitations/{w.invitation}"),
        ),
        "key.create.member": (
            "T",
            lambda w: Call(
                "POST",
                f"{w.org}/keys",
                {"name": "k", "group_id": g(w, "T"), "owner_user_id": w.subject},
            ),
        ),
        "key.create.own": (
            "T",
            lambda w: Call("POST", f"{w.org}/keys", {"name": "k", "group_id": g(w, "T")}),
        ),
        "keys.list": ("T", lambda w: Call("GET", f"{w.org}/keys", params=every, item=w.key)),
        "key.get": ("T", lambda w: Call("GET", f"{w.org}/keys/{w.key}")),
        "key.update": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/keys/{w.key}", {"status": "disabled"}),
        ),
        "key.rotate": ("T", lambda w: Call("POST", f"{w.org}/keys/{w.key}/rotate")),
        "key.delete": ("T", lambda w: Call("DELETE", f"{w.org}/keys/{w.key}")),
        "audit.list": ("T", lambda w: Call("GET", f"{w.org}/audit", params=every, item=w.event)),
        "audit.verify": ("R", lambda w: Call("GET", f"{w.org}/audit/verify")),
        # --- policies (the key row binds the policy bound nowhere to S's key K) ---
        "policy.create": (
            "T",
            lambda w: Call("POST", f"{w.org}/policies", {"name": "new policy", "rpm": 10}),
        ),
        "policies.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/policies", params=every, item=w.policy),
        ),
        "policy.get": ("T", lambda w: Call("GET", f"{w.org}/policies/{w.policy}")),
        "policy.update": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/policies/{w.policy}", {"rpm": 1000}),
        ),
        "policy.delete": ("T", lambda w: Call("DELETE", f"{w.org}/policies/{w.policy}")),
        "policy.bind": (
            "T",
            lambda w: Call(
                "POST",
                f"{w.org}/policies/{w.free_policy}/bindings",
                {"target_type": "key", "target_id": w.key},
            ),
        ),
        "policy.unbind": (
            "T",
            lambda w: Call("DELETE", f"{w.org}/policies/{w.policy}/bindings/{w.policy_binding}"),
        ),
        "key.policy": ("T", lambda w: Call("GET", f"{w.org}/keys/{w.key}/policy")),
        # --- end policies ---
        # --- credits (the org's pool: target R) ---
        "credits.get": ("R", lambda w: Call("GET", f"{w.org}/credits")),
        "credits.topup": (
            "R",
            lambda w: Call("POST", f"{w.org}/credits/topups", {"amount_usd": "1.5"}),
        ),
        "credits.adjust": (
            "R",
            lambda w: Call(
                "POST", f"{w.org}/credits/adjustments", {"amount_usd": "-1", "note": "matrix"}
            ),
        ),
        "ledger.list": (
            "R",
            lambda w: Call("GET", f"{w.org}/credits/ledger", params=every, item=w.ledger_entry),
        ),
        "ledger.csv": ("R", lambda w: Call("GET", f"{w.org}/credits/ledger.csv")),
        # --- end credits ---
        # --- routing (a group's override is set from above the group and read by its
        # subtree's owners, admins and viewers; a key's routing by whoever reads the key) ---
        "routing.put": (
            "T",
            lambda w: Call(
                "PUT", f"{w.org}/groups/{g(w, 'T')}/routing", {"provider_order": ["openai"]}
            ),
        ),
        "routing.get": ("T", lambda w: Call("GET", f"{w.org}/groups/{g(w, 'T')}/routing")),
        "routing.delete": ("T", lambda w: Call("DELETE", f"{w.org}/groups/{g(w, 'T')}/routing")),
        "routing.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/routing", params=every, item=w.routing_override),
        ),
        "key.routing": ("T", lambda w: Call("GET", f"{w.org}/keys/{w.key}/routing")),
        # --- end routing ---
        # --- budgets (who governs a scope: from above it; who reads: its subtree) ---
        "budget.put.org": ("R", lambda w: Call("PUT", f"{w.org}/budgets", _budget("org", None))),
        "budget.put.group": (
            "T",
            lambda w: Call("PUT", f"{w.org}/budgets", _budget("group", g(w, "T"))),
        ),
        "budget.put.member": (
            "T",
            lambda w: Call("PUT", f"{w.org}/budgets", _budget("member", w.subject)),
        ),
        "budget.put.key": ("T", lambda w: Call("PUT", f"{w.org}/budgets", _budget("key", w.key))),
        "budgets.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/budgets", params=every, item=w.budget),
        ),
        "budget.get": ("T", lambda w: Call("GET", f"{w.org}/budgets/{w.budget}")),
        "budget.delete": ("T", lambda w: Call("DELETE", f"{w.org}/budgets/{w.budget}")),
        # --- end budgets ---
        # --- activity and insights (whose usage: the subtrees read, and one's own) ---
        "activity.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/activity", params=every, item=w.usage_event),
        ),
        "activity.csv": ("T", lambda w: Call("GET", f"{w.org}/activity.csv")),
        "insights.anomalies": ("T", lambda w: Call("GET", f"{w.org}/insights/anomalies")),
        "insights.summary": ("T", lambda w: Call("GET", f"{w.org}/insights/summary")),
        # --- end activity and insights ---
        # --- analytics over the rollups (stats.*): whose usage as above; one member's or one
        # key's usage for those who read that member or key ---
        **{
            f"stats.activity{suffix}": (
                "T",
                lambda w, suffix=suffix: Call("GET", f"{w.org}/analytics/activity{suffix}"),
            )
            for suffix in ("", ".csv", ".pdf")
        },
        "stats.members": (
            "T",
            lambda w: Call("GET", f"{w.org}/analytics/members", params=every, item=w.subject),
        ),
        **{
            f"stats.members{suffix}": (
                "T",
                lambda w, suffix=suffix: Call("GET", f"{w.org}/analytics/members{suffix}"),
            )
            for suffix in (".csv", ".pdf")
        },
        **{
            f"stats.member{suffix}": (
                "T",
                lambda w, suffix=suffix: Call(
                    "GET", f"{w.org}/analytics/members/{w.subject}{suffix}"
                ),
            )
            for suffix in ("", ".csv", ".pdf")
        },
        **{
            f"stats.key{suffix}": (
                "T",
                lambda w, suffix=suffix: Call("GET", f"{w.org}/analytics/keys/{w.key}{suffix}"),
            )
            for suffix in ("", ".csv", ".pdf")
        },
        # --- end analytics ---
        # --- alerts: channels are the org's (any admin manages them, viewers read them);
        # rules and alerts belong to their node (ALERT_READ / ALERT_MANAGE there) ---
        "channels.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/alerts/channels", params=every, item=w.channel),
        ),
        "channel.create": (
            "T",
            lambda w: Call(
                "POST",
                f"{w.org}/alerts/channels",
                # A literal public address: checked without DNS, never connected to.
                {"name": "new hook", "kind": "webhook", "url": "https://93.184.215.14/hook"},
            ),
        ),
        "channel.get": ("T", lambda w: Call("GET", f"{w.org}/alerts/channels/{w.channel}")),
        "channel.update": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/alerts/channels/{w.channel}", {"enabled": False}),
        ),
        "channel.rotate": (
            "T",
            lambda w: Call("POST", f"{w.org}/alerts/channels/{w.channel}/rotate-secret"),
        ),
        # The channel's stored URL is on loopback, refused at send time: no connection is made.
        "channel.test": ("T", lambda w: Call("POST", f"{w.org}/alerts/channels/{w.channel}/test")),
        "channel.delete": (
            "T",
            lambda w: Call("DELETE", f"{w.org}/alerts/channels/{w.channel}"),
        ),
        "rules.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/alerts/rules", params=every, item=w.rule),
        ),
        "rule.create": (
            "T",
            lambda w: Call(
                "POST",
                f"{w.org}/alerts/rules",
                {
                    "name": "new rule",
                    "event": "key.created",
                    "scope_group_id": g(w, "T"),
                    "channel_ids": [w.channel],
                },
            ),
        ),
        "rule.get": ("T", lambda w: Call("GET", f"{w.org}/alerts/rules/{w.rule}")),
        "rule.update": (
            "T",
            lambda w: Call("PATCH", f"{w.org}/alerts/rules/{w.rule}", {"enabled": False}),
        ),
        "rule.delete": ("T", lambda w: Call("DELETE", f"{w.org}/alerts/rules/{w.rule}")),
        "alerts.list": (
            "T",
            lambda w: Call("GET", f"{w.org}/alerts", params=every, item=w.alert),
        ),
        "alert.get": ("T", lambda w: Call("GET", f"{w.org}/alerts/{w.alert}")),
        # --- end alerts ---
    }


def _budget(scope_type: str, scope_id: str | None) -> dict[str, Any]:
    return {"scope_type": scope_type, "scope_id": scope_id, "limit_usd": "10", "period": "day"}


CALLS = _calls()


def test_the_matrix_covers_every_org_scoped_route() -> None:
    routes = org_scoped_routes()
    names = ("R", "D1", "T", "P", "P2", "T2")
    world = World(
        org="/api/v1/orgs/{org_id}",
        nodes={name: f"{{{name}}}" for name in names},
        subject="{user_id}",
        key="{key_id}",
        invitation="{invitation_id}",
        event="",
        caller_token="",
    )
    covered = {
        (call.method, _template(call.path)) for call in (m(world) for _, m in CALLS.values())
    }
    assert set(EXPECTED) == set(CALLS)
    missing = {(m, p) for m, p in routes if (m, _template(p)) not in covered}
    assert missing == set(), f"routes without a row in the matrix: {sorted(missing)}"


def _template(path: str) -> str:
    """'/api/v1/orgs/{org_id}/groups/{P}' -> '/api/v1/orgs/{}/groups/{}'."""
    return re.sub(r"\{[^}]+\}", "{}", path)


# --- the world ---------------------------------------------------------------------------------


async def build_world(runtime: Runtime, role: str, position: str, target: str) -> World:
    """Org A and org B as drawn above, and a caller holding `role` at `position`."""
    pepper = runtime.settings.secret
    async with runtime.unit_of_work() as session:
        org_a = Organization(id=new_id("org"), name="A", max_level=4)
        org_b = Organization(id=new_id("org"), name="B")
        session.add_all([org_a, org_b])
        await session.flush()
        nodes: dict[str, Group] = {}

        def node(name: str, org: Organization, parent: str | None) -> Group:
            gid = new_id("grp")
            above = nodes[parent] if parent else None
            group = Group(
                id=gid,
                org_id=org.id,
                parent_id=above.id if above else None,
                name=name,
                level=above.level + 1 if above else 0,
                path=f"{above.path}/{gid}" if above else gid,
            )
            nodes[name] = group
            return group

        for name, org, parent in (
            ("R", org_a, None),
            ("D1", org_a, "R"),
            ("T", org_a, "D1"),
            ("P", org_a, "T"),
            ("P2", org_a, "T"),
            ("T2", org_a, "D1"),
            ("RB", org_b, None),
            ("DB", org_b, "RB"),
            ("TB", org_b, "DB"),
        ):
            session.add(node(name, org, parent))
            await session.flush()

        def person(label: str) -> User:
            user = User(id=new_id("usr"), email=f"{label}-{secrets.token_hex(6)}@example.com")
            session.add(user)
            return user

        def member(user: User, home: str, *roles: tuple[str, str]) -> None:
            org_id = nodes[home].org_id
            session.add(
                Membership(
                    id=new_id("mem"), org_id=org_id, user_id=user.id, home_group_id=nodes[home].id
                )
            )
            for at, held in roles:
                session.add(
                    RoleBinding(
                        id=new_id("rb"),
                        org_id=org_id,
                        group_id=nodes[at].id,
                        user_id=user.id,
                        role=held,
                    )
                )

        owner_a, owner_b, subject, caller = (
            person("owner-a"),
            person("owner-b"),
            person("subject"),
            person("caller"),
        )
        await session.flush()
        member(owner_a, "R", ("R", "owner"))
        member(owner_b, "RB", ("RB", "owner"))
        member(subject, "T", ("T", "member"), ("P", "viewer"))
        at = (
            OTHER_ORG_NODE[role]
            if position == "oth"
            else ("R" if role == "owner" else POSITIONS[target][position])
        )
        member(caller, at, (at, role))
        key = ApiKey(
            id=new_id("key"),
            org_id=org_a.id,
            group_id=nodes["T"].id,
            owner_user_id=subject.id,
            name="subject's key",
            prefix="sk-sg-xxxxxx",
            digest=secret_digest(pepper, secrets.token_hex(16)),
        )
        invitation = Invitation(
            id=new_id("inv"),
            org_id=org_a.id,
            email=f"invited-{secrets.token_hex(4)}@example.com",
            role="member",
            group_id=nodes["T"].id,
            digest=secret_digest(pepper, secrets.token_hex(16)),
            expires_at=runtime.clock.now().replace(year=2100),
        )
        session.add_all([key, invitation])
        await session.flush()
        event = await record(
            session,
            org_id=org_a.id,
            actor_user_id=subject.id,
            action="key.create",
            target_type="api_key",
            target_id=key.id,
            group_id=nodes["T"].id,
        )
        # --- policies: one bound to group T, one bound nowhere ---
        bound_policy = Policy(id=new_id("pol"), org_id=org_a.id, name="bound at T", rpm=100)
        free_policy = Policy(id=new_id("pol"), org_id=org_a.id, name="bound nowhere", rpm=100)
        session.add_all([bound_policy, free_policy])
        await session.flush()
        policy_binding = PolicyBinding(
            id=new_id("pb"),
            org_id=org_a.id,
            policy_id=bound_policy.id,
            target_type="group",
            target_id=nodes["T"].id,
        )
        session.add(policy_binding)
        await session.flush()
        # --- end policies ---
        # --- credits: one top-up in org A's ledger ---
        ledger_entry = LedgerEntry(
            id=new_id("led"), org_id=org_a.id, kind="topup", amount_nusd=5 * 10**9, note="seed"
        )
        session.add(ledger_entry)
        await session.flush()
        # --- end credits ---
        # --- routing: an override at group T ---
        routing_override = RoutingOverrideRow(
            id=new_id("rto"),
            org_id=org_a.id,
            group_id=nodes["T"].id,
            provider_order=["openai"],
            max_cost_per_request_nusd=10**8,
            on_cost_exceeded="refuse",
        )
        session.add(routing_override)
        await session.flush()
        # --- end routing ---
        # --- budgets: one on group T ---
        budget = Budget(
            id=new_id("bud"),
            org_id=org_a.id,
            scope_type="group",
            scope_id=nodes["T"].id,
            period="month",
            limit_nusd=10**9,
            enforcement="hard",
            thresholds=[],
        )
        session.add(budget)
        await session.flush()
        # --- end budgets ---
        # --- activity: one request of S's key K at T ---
        usage_event = new_id("req")
        await store_usage(
            session,
            [
                {
                    "request_id": usage_event,
                    "created_at": runtime.clock.now(),
                    "org_id": org_a.id,
                    "group_id": nodes["T"].id,
                    "key_id": key.id,
                    "user_id": subject.id,
                    "requested_model": "gpt-4o-mini",
                    "served_model": "gpt-4o-mini",
                    "provider": "openai",
                    "app": None,
                    "prompt_tokens": 8,
                    "completion_tokens": 16,
                    "cached_tokens": 0,
                    "cost_nusd": 10_800,
                    "latency_ms": 50,
                    "ttft_ms": None,
                    "status_code": 200,
                    "error_type": None,
                    "stream": False,
                    "usage_estimated": False,
                    "routing": None,
                }
            ],
        )
        # --- end activity ---
        # --- alerts: a webhook channel, a rule scoped to T sending to it, an alert at T ---
        channel_id = new_id("chn")
        config = {"url": "http://127.0.0.1:9/hook", "secrets": [{"secret": "whsec_x"}]}
        session.add(
            AlertChannel(
                id=channel_id,
                org_id=org_a.id,
                name="ops",
                kind="webhook",
                target_hint="http://127.0.0.1:9",
                config_sealed=seal_config(channel_box(pepper), org_a.id, channel_id, config),
            )
        )
        alert_rule = AlertRule(
            id=new_id("arl"),
            org_id=org_a.id,
            name="team keys",
            event="key.created",
            scope_group_id=nodes["T"].id,
            channel_ids=[channel_id],
        )
        alert = Alert(
            id=new_id("alt"),
            org_id=org_a.id,
            event="key.created",
            dedupe_key=f"key.created:{key.id}",
            severity="info",
            title="API key created",
            text="The API key was created.",
            group_id=nodes["T"].id,
            occurred_at=runtime.clock.now(),
        )
        session.add_all([alert_rule, alert])
        await session.flush()
        # --- end alerts ---
        _token, secret = await issue_admin_token(session, caller, pepper=pepper)
        return World(
            org=f"/api/v1/orgs/{org_a.id}",
            nodes={name: group.id for name, group in nodes.items()},
            subject=subject.id,
            key=key.id,
            invitation=invitation.id,
            event=event.id,
            caller_token=secret,
            ledger_entry=ledger_entry.id,
            policy=bound_policy.id,
            policy_binding=policy_binding.id,
            free_policy=free_policy.id,
            budget=budget.id,
            routing_override=routing_override.id,
            usage_event=usage_event,
            channel=channel_id,
            rule=alert_rule.id,
            alert=alert.id,
        )


def outcome(response: httpx.Response, item: str | None) -> str:
    status = response.status_code
    if not 200 <= status < 300:
        return str(status)
    if item is None:
        return "ok"
    ids = {
        entry.get("id") or entry.get("user_id") or entry.get("request_id")
        for entry in response.json()["items"]
    }
    return "ok+" if item in ids else "ok-"


@pytest.mark.parametrize("row", list(EXPECTED))
async def test_permission_matrix(row: str, runtime: Runtime, app_client: httpx.AsyncClient) -> None:
    target, make = CALLS[row]
    mismatches = []
    for (role, position), expected in zip(COLUMNS, EXPECTED[row], strict=True):
        if expected == "-":
            assert position not in POSITIONS[target] or role == "owner", (row, role, position)
            continue
        world = await build_world(runtime, role, position, target)
        call = make(world)
        response = await app_client.request(
            call.method,
            call.path,
            json=call.json,
            params=call.params,
            headers={"authorization": f"Bearer {world.caller_token}"},
        )
        got = outcome(response, call.item)
        if got != expected:
            mismatches.append(f"{role}@{position}: expected {expected}, got {got}: {response.text}")
    assert mismatches == [], f"{row}:\n" + "\n".join(mismatches)
