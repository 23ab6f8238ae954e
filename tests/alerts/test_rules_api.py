"""Alert rules over the admin API: CRUD and filters, params checked per event and stored in
their normalised form, recipients and channels checked against the org (404 naming the field,
the same for unknown ids and another tenant's), who may read and manage rules at the root and
at a team, moves that need both ends, and another tenant's rules answering 404."""

from __future__ import annotations

import re
import secrets
from typing import Any, get_args

import httpx
import pytest

from sluicegate.alerts.models import EVENTS
from sluicegate.alerts.schemas import EVENT_PARAMS, Event
from sluicegate.core.ids import new_id
from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, make_person, ok
from tests.alerts.test_channels_api import SLACK_URL, client, new_channel, org, resolver
from tests.factories import Org, join, make_org

__all__ = ["client", "org", "resolver"]  # fixtures shared with the channel tests
ANY_ID = re.compile(r"\b(chn|grp|usr)_[0-9a-z]{26}\b")


def uid(api: Api) -> str:
    assert api.person is not None
    return api.person.user_id


async def new_rule(api: Api, org: Org, **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"rule-{secrets.token_hex(4)}",
        "event": "key.created",
        "recipients": {"scope_admins": True},
        **fields,
    }
    return dict(ok(await api.post(org.rules, json=body), 201))


def test_the_api_names_every_event_the_tables_know() -> None:
    assert get_args(Event) == EVENTS
    assert tuple(EVENT_PARAMS) == EVENTS


# --- CRUD --------------------------------------------------------------------------------------


async def test_a_rule_is_created_read_listed_changed_and_deleted(org: Org) -> None:
    channel = await new_channel(org.owner, org, kind="slack", url=SLACK_URL)
    created = await new_rule(
        org.owner,
        org,
        name="Team budgets",
        event="budget.threshold",
        scope_group_id=org.team,
        params={"budget_ids": ["bud_a", "bud_b", "bud_a"], "min_percent": 80},
        recipients={"key_owner": True, "user_ids": [uid(org.owner), uid(org.owner)]},
        channel_ids=[channel["id"], channel["id"]],
    )
    assert created["id"].startswith("arl_")
    assert created["name"] == "Team budgets" and created["event"] == "budget.threshold"
    assert created["scope_group_id"] == org.team
    assert created["params"] == {"budget_ids": ["bud_a", "bud_b"], "min_percent": 80}
    assert created["recipients"] == {
        "key_owner": True,
        "scope_admins": False,
        "user_ids": [uid(org.owner)],
    }
    assert created["channel_ids"] == [channel["id"]]
    assert created["enabled"] is True
    path = f"{org.rules}/{created['id']}"
    assert ok(await org.owner.get(path)) == created

    org_wide = await new_rule(org.owner, org, event="credit.low", params={"below_usd": 5})
    keys = await new_rule(org.owner, org, scope_group_id=org.division)
    listed = await all_pages(org.owner, org.rules, {"limit": 2})
    assert [r["id"] for r in listed] == [created["id"], org_wide["id"], keys["id"]]
    by_event = await all_pages(org.owner, org.rules, {"event": "credit.low"})
    assert [r["id"] for r in by_event] == [org_wide["id"]]
    by_scope = await all_pages(org.owner, org.rules, {"scope_group_id": org.division})
    assert [r["id"] for r in by_scope] == [keys["id"]]
    whole_org = await all_pages(org.owner, org.rules, {"scope_group_id": org.root})
    assert [r["id"] for r in whole_org] == [org_wide["id"]]
    assert await all_pages(org.owner, org.rules, {"scope_group_id": new_id("grp")}) == []

    changed = ok(
        await org.owner.patch(
            path,
            json={
                "name": "Org budgets",
                "scope_group_id": None,
                "params": {},
                "recipients": {"scope_admins": True},
                "channel_ids": [],
                "enabled": False,
            },
        )
    )
    assert changed["name"] == "Org budgets" and changed["scope_group_id"] is None
    assert changed["params"] == {} and changed["channel_ids"] == []
    assert changed["recipients"] == {"key_owner": False, "scope_admins": True, "user_ids": []}
    assert changed["enabled"] is False and changed["event"] == "budget.threshold"
    kept = ok(await org.owner.patch(path, json={"name": "Renamed"}))
    assert {k: v for k, v in kept.items() if k not in ("name", "updated_at")} == {
        k: v for k, v in changed.items() if k not in ("name", "updated_at")
    }

    assert (await org.owner.delete(path)).status_code == 204
    assert error(await org.owner.get(path), 404)["code"] == "not_found"
    error(await org.owner.patch(path, json={"name": "again"}), 404)
    error(await org.owner.delete(path), 404)


async def test_the_root_group_is_the_whole_org(org: Org) -> None:
    rule = await new_rule(org.owner, org, scope_group_id=org.root)
    assert rule["scope_group_id"] is None
    moved = ok(
        await org.owner.patch(f"{org.rules}/{rule['id']}", json={"scope_group_id": org.team})
    )
    assert moved["scope_group_id"] == org.team


async def test_every_rule_change_is_audited_at_its_scope(org: Org) -> None:
    rule = await new_rule(org.owner, org, scope_group_id=org.team)
    path = f"{org.rules}/{rule['id']}"
    ok(await org.owner.patch(path, json={"enabled": False}))
    assert (await org.owner.delete(path)).status_code == 204
    events = ok(await org.owner.get(f"{org.base}/audit", params={"limit": 200}))["items"]
    mine = {e["action"]: e for e in events if e["target_id"] == rule["id"]}
    assert set(mine) == {"alert_rule.create", "alert_rule.update", "alert_rule.delete"}
    assert mine["alert_rule.create"]["after"]["scope_group_id"] == org.team
    assert mine["alert_rule.update"]["before"]["enabled"] is True
    assert mine["alert_rule.update"]["after"]["enabled"] is False
    assert mine["alert_rule.delete"]["before"]["name"] == rule["name"]
    assert {e["target_type"] for e in mine.values()} == {"alert_rule"}


# --- params --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "params", "stored"),
    [
        ("budget.threshold", None, {}),
        ("budget.threshold", {"min_percent": 1000}, {"min_percent": 1000}),
        ("budget.threshold", {"budget_ids": ["bud_x"]}, {"budget_ids": ["bud_x"]}),
        ("credit.low", {"below_usd": 12.5}, {"below_usd": "12.500000000"}),
        ("credit.low", {"below_usd": "0"}, {"below_usd": "0.000000000"}),
        ("credit.low", {"runway_days": 7}, {"runway_days": 7}),
        (
            "credit.low",
            {"below_usd": "100.25", "runway_days": 365},
            {"below_usd": "100.250000000", "runway_days": 365},
        ),
        ("anomaly.detected", {}, {}),
        (
            "guardrail.blocked",
            {"count": 10, "window_minutes": 1440},
            {"count": 10, "window_minutes": 1440},
        ),
        ("key.created", {}, {}),
        ("key.disabled", None, {}),
        ("key.expired", {}, {}),
        ("member.joined", {}, {}),
        ("member.removed", {}, {}),
    ],
)
async def test_params_are_stored_in_their_normalised_form(
    org: Org, event: str, params: dict[str, Any] | None, stored: dict[str, Any]
) -> None:
    rule = await new_rule(org.owner, org, event=event, params=params)
    assert rule["params"] == stored
    assert ok(await org.owner.get(f"{org.rules}/{rule['id']}"))["params"] == stored


@pytest.mark.parametrize(
    ("event", "params", "field"),
    [
        ("budget.threshold", {"min_percent": 0}, "params.min_percent"),
        ("budget.threshold", {"min_percent": 1001}, "params.min_percent"),
        ("budget.threshold", {"min_percent": True}, "params.min_percent"),
        ("budget.threshold", {"min_percent": "50"}, "params.min_percent"),
        ("budget.threshold", {"budget_ids": []}, "params.budget_ids"),
        ("budget.threshold", {"budget_ids": ["bud\x00"]}, "params.budget_ids.0"),
        ("budget.threshold", {"percent": 50}, "params.percent"),
        ("credit.low", {}, "params"),
        ("credit.low", {"below_usd": -1}, "params.below_usd"),
        ("credit.low", {"below_usd": "0.0000000001"}, "params.below_usd"),
        ("credit.low", {"below_usd": "lots"}, "params.below_usd"),
        ("credit.low", {"runway_days": 0}, "params.runway_days"),
        ("credit.low", {"runway_days": 366}, "params.runway_days"),
        ("guardrail.blocked", {}, "params.count"),
        ("guardrail.blocked", {"count": 0, "window_minutes": 5}, "params.count"),
        ("guardrail.blocked", {"count": 3}, "params.window_minutes"),
        ("guardrail.blocked", {"count": 3, "window_minutes": 1441}, "params.window_minutes"),
        ("anomaly.detected", {"sensitivity": 3}, "params.sensitivity"),
        ("key.created", {"min_percent": 50}, "params.min_percent"),
    ],
)
async def test_params_are_checked_for_their_event(
    org: Org, event: str, params: dict[str, Any], field: str
) -> None:
    body = {"name": "r", "event": event, "params": params, "recipients": {"scope_admins": True}}
    problem = error(await org.owner.post(org.rules, json=body), 422)
    assert problem["details"]["field"] == field, problem
    assert problem["message"].startswith(f"{field}: ")
    assert event in problem["message"]
    assert await all_pages(org.owner, org.rules) == []


async def test_a_new_event_checks_the_params_again(org: Org) -> None:
    rule = await new_rule(org.owner, org, event="budget.threshold", params={"min_percent": 50})
    path = f"{org.rules}/{rule['id']}"
    problem = error(await org.owner.patch(path, json={"event": "guardrail.blocked"}), 422)
    assert problem["details"]["field"] == "params.count"
    problem = error(await org.owner.patch(path, json={"params": {"min_percent": 0}}), 422)
    assert problem["details"]["field"] == "params.min_percent"
    changed = ok(
        await org.owner.patch(
            path,
            json={"event": "guardrail.blocked", "params": {"count": 5, "window_minutes": 10}},
        )
    )
    assert changed["event"] == "guardrail.blocked"
    assert changed["params"] == {"count": 5, "window_minutes": 10}
    assert (
        ok(await org.owner.patch(path, json={"event": "key.created", "params": {}}))["params"] == {}
    )


async def test_an_unknown_event_is_422(org: Org) -> None:
    body = {"name": "r", "event": "budget.exceeded", "recipients": {"scope_admins": True}}
    assert error(await org.owner.post(org.rules, json=body), 422)["details"]["field"] == "event"


# --- recipients, channels, scope ---------------------------------------------------------------


async def test_a_rule_needs_a_channel_or_a_recipient(org: Org) -> None:
    body = {"name": "r", "event": "key.created"}
    problem = error(await org.owner.post(org.rules, json=body), 422)
    assert problem["details"] == {"field": "channel_ids"}
    assert "at least one channel or recipient" in problem["message"]
    empty = {**body, "recipients": {"key_owner": False, "user_ids": []}, "channel_ids": []}
    error(await org.owner.post(org.rules, json=empty), 422)
    rule = await new_rule(org.owner, org, recipients={"key_owner": True})
    path = f"{org.rules}/{rule['id']}"
    problem = error(await org.owner.patch(path, json={"recipients": {}}), 422)
    assert problem["details"] == {"field": "channel_ids"}
    channel = await new_channel(org.owner, org)
    moved = ok(await org.owner.patch(path, json={"recipients": {}, "channel_ids": [channel["id"]]}))
    assert moved["recipients"] == {"key_owner": False, "scope_admins": False, "user_ids": []}


async def test_unknown_or_deleted_channels_members_and_groups_are_404_naming_the_field(
    org: Org, runtime: Runtime
) -> None:
    deleted_channel = await new_channel(org.owner, org)
    assert (await org.owner.delete(f"{org.channels}/{deleted_channel['id']}")).status_code == 204
    doomed = ok(await org.owner.post(f"{org.base}/groups", json={"name": "doomed"}), 201)
    ok(await org.owner.delete(f"{org.base}/groups/{doomed['id']}"))
    stranger = await make_person(runtime)
    removed = await join(org, "member", org.team)
    assert (await org.owner.delete(f"{org.base}/members/{uid(removed)}")).status_code == 204
    cases = [
        ({"channel_ids": [new_id("chn")]}, "channel_ids"),
        ({"channel_ids": [deleted_channel["id"]]}, "channel_ids"),
        ({"channel_ids": ["not-an-id"]}, "channel_ids"),
        ({"recipients": {"user_ids": [new_id("usr")]}}, "recipients.user_ids"),
        ({"recipients": {"user_ids": [stranger.user_id]}}, "recipients.user_ids"),
        ({"recipients": {"user_ids": [uid(removed)]}}, "recipients.user_ids"),
        ({"scope_group_id": new_id("grp")}, "scope_group_id"),
        ({"scope_group_id": doomed["id"]}, "scope_group_id"),
    ]
    rule = await new_rule(org.owner, org)
    for fields, field in cases:
        body = {"name": "r", "event": "key.created", "recipients": {"scope_admins": True}}
        problem = error(await org.owner.post(org.rules, json={**body, **fields}), 404)
        assert problem["details"]["field"] == field, (fields, problem)
        problem = error(await org.owner.patch(f"{org.rules}/{rule['id']}", json=fields), 404)
        assert problem["details"]["field"] == field, (fields, problem)
    assert [r["id"] for r in await all_pages(org.owner, org.rules)] == [rule["id"]]


# --- who may do what ------------------------------------------------------------------------------

ROLES = ("owner", "root admin", "team admin", "root viewer", "team viewer", "member")
# (role, scope) -> may read a rule there, may manage a rule there
MAY = {
    ("owner", "root"): (True, True),
    ("owner", "team"): (True, True),
    ("root admin", "root"): (True, True),
    ("root admin", "team"): (True, True),
    ("team admin", "root"): (False, False),
    ("team admin", "team"): (True, True),
    ("root viewer", "root"): (True, False),
    ("root viewer", "team"): (True, False),
    ("team viewer", "root"): (False, False),
    ("team viewer", "team"): (True, False),
    ("member", "root"): (False, False),
    ("member", "team"): (False, False),
}


async def people(org: Org) -> dict[str, Api]:
    return {
        "owner": org.owner,
        "root admin": await join(org, "admin", org.root),
        "team admin": await join(org, "admin", org.team),
        "root viewer": await join(org, "viewer", org.root),
        "team viewer": await join(org, "viewer", org.team),
        "member": await join(org, "member", org.team),
    }


def status_of(response: httpx.Response) -> int:
    return 200 if response.status_code in (200, 201, 204) else response.status_code


async def test_rules_are_read_and_managed_by_those_covering_their_scope(org: Org) -> None:
    callers = await people(org)
    scopes = {"root": None, "team": org.team}
    answers: dict[tuple[str, str, str], Any] = {}
    expected: dict[tuple[str, str, str], Any] = {}
    for role in ROLES:
        api = callers[role]
        for scope, group in scopes.items():
            read, manage = MAY[(role, scope)]
            rule = await new_rule(org.owner, org, scope_group_id=group)
            path = f"{org.rules}/{rule['id']}"
            listed = ok(await api.get(org.rules, params={"limit": 200}))["items"]
            answers[(role, scope, "listed")] = rule["id"] in [r["id"] for r in listed]
            answers[(role, scope, "get")] = status_of(await api.get(path))
            body = {"name": "r", "event": "key.created", "scope_group_id": group}
            body["recipients"] = {"scope_admins": True}
            answers[(role, scope, "create")] = status_of(await api.post(org.rules, json=body))
            answers[(role, scope, "update")] = status_of(
                await api.patch(path, json={"enabled": False})
            )
            answers[(role, scope, "delete")] = status_of(await api.delete(path))
            expected[(role, scope, "listed")] = read
            expected[(role, scope, "get")] = 200 if read else 403
            for op in ("create", "update", "delete"):
                expected[(role, scope, op)] = 200 if manage else 403
    assert answers == expected


async def test_moving_a_rule_needs_the_right_to_manage_it_at_both_ends(org: Org) -> None:
    team_admin = await join(org, "admin", org.team)
    rule = await new_rule(org.owner, org, scope_group_id=org.team)
    path = f"{org.rules}/{rule['id']}"
    problem = error(await team_admin.patch(path, json={"scope_group_id": None}), 403)
    assert problem["details"] == {"action": "alert.manage"}
    problem = error(await team_admin.patch(path, json={"scope_group_id": org.division}), 403)
    assert ok(await org.owner.get(path))["scope_group_id"] == org.team
    # Nor may a rule at the root be pulled down into the team by the team's admin.
    high = await new_rule(org.owner, org)
    error(
        await team_admin.patch(f"{org.rules}/{high['id']}", json={"scope_group_id": org.team}), 403
    )
    division_admin = await join(org, "admin", org.division)
    moved = ok(await division_admin.patch(path, json={"scope_group_id": org.division}))
    assert moved["scope_group_id"] == org.division


async def test_members_list_no_rules(org: Org) -> None:
    member = await join(org, "member", org.team)
    await new_rule(org.owner, org)
    await new_rule(org.owner, org, scope_group_id=org.team)
    assert ok(await member.get(org.rules)) == {"items": [], "next_cursor": None}


# --- tenants ---------------------------------------------------------------------------------


async def test_another_orgs_rules_answer_404_and_its_ids_cannot_be_referenced(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    a = await make_org(runtime, client, "A", levels=2)
    b = await make_org(runtime, client, "B", levels=2)
    their_channel = await new_channel(b.owner, b, kind="slack", url=SLACK_URL)
    their_rule = await new_rule(b.owner, b, scope_group_id=b.team)
    their_member = await join(b, "member", b.team)
    for path in (f"{a.rules}/{their_rule['id']}", f"{b.rules}/{their_rule['id']}"):
        assert error(await a.owner.get(path), 404)["code"] == "not_found"
        error(await a.owner.patch(path, json={"enabled": False}), 404)
        error(await a.owner.delete(path), 404)
    error(await a.owner.get(b.rules), 404)
    error(await a.owner.post(b.rules, json={"name": "r", "event": "key.created"}), 404)

    base = {"name": "r", "event": "key.created", "recipients": {"scope_admins": True}}
    unknown = {
        "channel_ids": [new_id("chn")],
        "scope_group_id": new_id("grp"),
        "recipients": {"user_ids": [new_id("usr")]},
    }
    foreign = {
        "channel_ids": [their_channel["id"]],
        "scope_group_id": b.team,
        "recipients": {"user_ids": [uid(their_member)]},
    }
    for name in ("channel_ids", "scope_group_id", "recipients"):
        answers = []
        for fields in (unknown, foreign):
            problem = error(await a.owner.post(a.rules, json={**base, name: fields[name]}), 404)
            # The same words for an id that exists nowhere and one of another org.
            answers.append((problem["details"]["field"], ANY_ID.sub("<id>", problem["message"])))
        assert answers[0] == answers[1], answers
    assert await all_pages(a.owner, a.rules) == []
    assert ok(await b.owner.get(f"{b.rules}/{their_rule['id']}")) == their_rule
