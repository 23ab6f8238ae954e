"""The credit pool over the admin API: who may top up (owners, admins bound at the org's
topup_max_level or above), adjust and refund (owners), and read; amounts as exact decimal strings
and their validation; tenant isolation; audit events; the balance from the ledger or, when
credit is enforced, from the counter store (503 when it is down, while top-ups still commit);
and the credit_enforced setting reaching the proxy."""

from __future__ import annotations

import httpx
import pytest

from sluicegate.app import create_app
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import Api, error, ok
from tests.conftest import make_settings
from tests.factories import Org, join, make_org
from tests.support import free_port

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=2)


async def top_up(api: Api, org: Org, amount: object, note: str | None = None) -> httpx.Response:
    body = {"amount_usd": amount} if note is None else {"amount_usd": amount, "note": note}
    return await api.post(f"{org.credits}/topups", json=body)


async def balance(api: Api, org: Org) -> dict:
    return ok(await api.get(org.credits))


# --- amounts --------------------------------------------------------------------------------------


async def test_a_top_up_is_one_exact_ledger_entry(org: Org) -> None:
    entry = ok(await top_up(org.owner, org, "12.5", "invoice 42"), 201)
    assert entry["id"].startswith("led_")
    assert entry["kind"] == "topup" and entry["amount_usd"] == "12.500000000"
    assert entry["note"] == "invoice 42"
    assert entry["actor_user_id"] == org.owner.person.user_id
    assert entry["period_start"] is None and entry["requests"] is None
    assert entry["created_at"].endswith("Z")
    ok(await top_up(org.owner, org, 0.1), 201)
    ok(await top_up(org.owner, org, "0.000000001"), 201)
    ok(await top_up(org.owner, org, 3), 201)
    assert await balance(org.owner, org) == {
        "balance_usd": "15.600000001",
        "reserved_usd": "0.000000000",
        "available_usd": "15.600000001",
        "enforced": True,  # the first top-up made the org prepaid
        "ledger_balance_usd": "15.600000001",
    }


@pytest.mark.parametrize(
    "amount",
    [
        0,
        "0",
        "0.000000000",
        -1,
        "-0.5",
        "0.0000000001",
        "1.1234567891",
        "abc",
        "",
        "NaN",
        "Infinity",
        True,
        None,
        [],
        {"usd": 1},
        "1e400",
        10**10,
    ],
)
async def test_an_invalid_top_up_amount_is_422_naming_amount_usd(org: Org, amount: object) -> None:
    body = error(await top_up(org.owner, org, amount), 422)
    assert body["details"]["field"] == "amount_usd", body
    assert body["message"].startswith("amount_usd")
    assert (await balance(org.owner, org))["balance_usd"] == "0.000000000"


async def test_a_missing_amount_or_unknown_field_is_422(org: Org) -> None:
    assert (
        error(await org.owner.post(f"{org.credits}/topups", json={}), 422)["details"]["field"]
        == "amount_usd"
    )
    error(await org.owner.post(f"{org.credits}/topups", json={"amount_usd": 1, "x": 1}), 422)
    body = error(await top_up(org.owner, org, 1, "x" * 501), 422)
    assert body["details"]["field"] == "note"
    assert error(await top_up(org.owner, org, 1, "bell\x07"), 422)["details"]["field"] == "note"


async def test_the_balance_stays_within_range(org: Org) -> None:
    ok(await top_up(org.owner, org, "999999999"), 201)
    body = error(await top_up(org.owner, org, "2"), 422)
    assert body["details"]["field"] == "amount_usd" and "range" in body["message"]


async def test_adjustments_and_refunds_are_signed_and_explained(org: Org) -> None:
    ok(await top_up(org.owner, org, "10"), 201)
    url = f"{org.credits}/adjustments"
    taken = ok(
        await org.owner.post(url, json={"amount_usd": "-2.25", "note": "duplicate top-up"}), 201
    )
    assert (taken["kind"], taken["amount_usd"], taken["note"]) == (
        "adjustment",
        "-2.250000000",
        "duplicate top-up",
    )
    refund = ok(
        await org.owner.post(
            url, json={"amount_usd": "0.75", "kind": "refund", "note": "upstream outage"}
        ),
        201,
    )
    assert (refund["kind"], refund["amount_usd"]) == ("refund", "0.750000000")
    assert (await balance(org.owner, org))["balance_usd"] == "8.500000000"
    for body, field in (
        ({"amount_usd": "-1", "kind": "refund", "note": "x"}, "amount_usd"),
        ({"amount_usd": "0", "note": "x"}, "amount_usd"),
        ({"amount_usd": "1.0000000001", "note": "x"}, "amount_usd"),
        ({"amount_usd": "1"}, "note"),
        ({"amount_usd": "1", "note": "   "}, "note"),
        ({"amount_usd": "1", "note": "x" * 501}, "note"),
        ({"amount_usd": "1", "note": "x", "kind": "topup"}, "kind"),
        ({"amount_usd": "1", "note": "x", "kind": "usage"}, "kind"),
    ):
        assert error(await org.owner.post(url, json=body), 422)["details"]["field"] == field
    assert (await balance(org.owner, org))["balance_usd"] == "8.500000000"


# --- permissions ----------------------------------------------------------------------------------


async def test_who_may_top_up_follows_the_orgs_topup_level(org: Org) -> None:
    root_admin = await join(org, "admin", org.root)
    division_admin = await join(org, "admin", org.division)
    team_admin = await join(org, "admin", org.team)
    viewer = await join(org, "viewer", org.root)
    member = await join(org, "member", org.root)
    # The default topup_max_level is 1: admins at levels 0 and 1, not 2.
    ok(await top_up(root_admin, org, 1), 201)
    ok(await top_up(division_admin, org, 1), 201)
    denied = error(await top_up(team_admin, org, 1), 403)
    assert denied["details"]["action"] == "credit.topup" and "topup_max_level" in denied["message"]
    error(await top_up(viewer, org, 1), 403)
    error(await top_up(member, org, 1), 403)
    ok(await org.owner.patch(org.base, json={"topup_max_level": 2}))
    ok(await top_up(team_admin, org, 1), 201)
    ok(await org.owner.patch(org.base, json={"topup_max_level": 0}))
    ok(await top_up(root_admin, org, 1), 201)
    error(await top_up(division_admin, org, 1), 403)
    error(await top_up(team_admin, org, 1), 403)
    # A refused top-up never reaches the ledger.
    assert (await balance(org.owner, org))["balance_usd"] == "4.000000000"


async def test_only_owners_adjust_and_owners_admins_viewers_read(org: Org) -> None:
    root_admin = await join(org, "admin", org.root)
    team_admin = await join(org, "admin", org.team)
    viewer = await join(org, "viewer", org.team)
    member = await join(org, "member", org.root)
    body = {"amount_usd": "5", "note": "goodwill"}
    for api in (root_admin, viewer, member):
        denied = error(await api.post(f"{org.credits}/adjustments", json=body), 403)
        assert denied["details"]["action"] == "credit.adjust"
    ok(await org.owner.post(f"{org.credits}/adjustments", json=body), 201)
    for api in (org.owner, root_admin, team_admin, viewer):
        assert (await balance(api, org))["balance_usd"] == "5.000000000"
        assert len(ok(await api.get(f"{org.credits}/ledger"))["items"]) == 1
        assert (await api.get(f"{org.credits}/ledger.csv")).status_code == 200
    for path in ("", "/ledger", "/ledger.csv"):
        assert error(await member.get(org.credits + path), 403)["details"]["action"] == (
            "credit.read"
        )


async def test_another_tenants_credits_are_404(
    org: Org, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    other = await make_org(runtime, app_client, levels=2)
    ok(await top_up(other.owner, other, 7), 201)
    for method, path, body in (
        ("GET", other.credits, None),
        ("GET", f"{other.credits}/ledger", None),
        ("GET", f"{other.credits}/ledger.csv", None),
        ("POST", f"{other.credits}/topups", {"amount_usd": 1}),
        ("POST", f"{other.credits}/adjustments", {"amount_usd": 1, "note": "x"}),
    ):
        response = await org.owner.call(method, path, json=body)
        assert error(response, 404)["code"] == "not_found"
        assert "7.000000000" not in response.text
    assert (await balance(other.owner, other))["balance_usd"] == "7.000000000"
    error(await org.owner.get("/api/v1/orgs/org_nope/credits"), 404)


async def test_changes_are_audited(org: Org) -> None:
    topped = ok(await top_up(org.owner, org, "3.5", "wire"), 201)
    adjusted = ok(
        await org.owner.post(
            f"{org.credits}/adjustments", json={"amount_usd": "-1", "note": "fee"}
        ),
        201,
    )
    events = ok(await org.owner.get(f"{org.base}/audit", params={"action": "credit"}))["items"]
    assert [(e["action"], e["target_type"], e["target_id"]) for e in events] == [
        ("credit.adjust", "ledger_entry", adjusted["id"]),
        ("credit.topup", "ledger_entry", topped["id"]),
    ]
    assert events[1]["after"] == {"kind": "topup", "amount_usd": "3.500000000", "note": "wire"}
    assert events[1]["actor_user_id"] == org.owner.person.user_id
    assert events[0]["group_id"] == org.root
    assert ok(await org.owner.get(f"{org.base}/audit/verify"))["intact"] is True


# --- the credit_enforced setting ------------------------------------------------------------------


async def test_credit_enforced_is_an_owners_setting_and_audited(org: Org) -> None:
    assert ok(await org.owner.get(org.base))["credit_enforced"] is False
    admin = await join(org, "admin", org.root)
    error(await admin.patch(org.base, json={"credit_enforced": True}), 403)
    changed = ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
    assert changed["credit_enforced"] is True
    assert (await balance(org.owner, org))["enforced"] is True
    error(await org.owner.patch(org.base, json={"credit_enforced": "maybe"}), 422)
    events = ok(await org.owner.get(f"{org.base}/audit", params={"action": "org.update"}))
    update = events["items"][0]
    assert update["before"]["credit_enforced"] is False
    assert update["after"]["credit_enforced"] is True


async def test_the_first_top_up_makes_the_org_prepaid_unless_an_owner_chose(
    org: Org, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    assert ok(await org.owner.get(org.base))["credit_enforced"] is False
    ok(await top_up(org.owner, org, "1"), 201)
    assert ok(await org.owner.get(org.base))["credit_enforced"] is True
    events = ok(await org.owner.get(f"{org.base}/audit", params={"action": "org.update"}))
    assert [
        (e["before"]["credit_enforced"], e["after"]["credit_enforced"]) for e in events["items"]
    ] == [(False, True)]
    # An owner's choice stays: switched off, later top-ups leave it off.
    ok(await org.owner.patch(org.base, json={"credit_enforced": False}))
    ok(await top_up(org.owner, org, "1"), 201)
    assert ok(await org.owner.get(org.base))["credit_enforced"] is False
    other = await make_org(runtime, proxy_client, levels=2)
    ok(await other.owner.patch(other.base, json={"credit_enforced": False}))
    ok(await top_up(other.owner, other, "1"), 201)
    assert ok(await other.owner.get(other.base))["credit_enforced"] is False


async def test_the_balance_reads_the_counter_store_only_when_enforced(
    org: Org, runtime: Runtime, settings: Settings
) -> None:
    ok(await org.owner.patch(org.base, json={"credit_enforced": False}))  # chosen: not prepaid
    ok(await top_up(org.owner, org, "2"), 201)
    key = f"{settings.redis_prefix}:{{{org.id}}}:credit"
    assert (await balance(org.owner, org))["balance_usd"] == "2.000000000"
    if runtime.redis is not None:
        assert await runtime.redis.exists(key) == 0
    ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
    assert await balance(org.owner, org) == {
        "balance_usd": "2.000000000",
        "reserved_usd": "0.000000000",
        "available_usd": "2.000000000",
        "enforced": True,
        "ledger_balance_usd": "2.000000000",
    }
    if runtime.redis is not None:
        assert await runtime.redis.exists(key) == 1
    # A top-up after commit reaches the live counter.
    ok(await top_up(org.owner, org, "0.5"), 201)
    assert (await balance(org.owner, org))["balance_usd"] == "2.500000000"
    # Turning enforcement off drops the counter: the next time it is rebuilt from the ledger.
    ok(await org.owner.patch(org.base, json={"credit_enforced": False}))
    if runtime.redis is not None:
        assert await runtime.redis.exists(key) == 0


async def test_enforcing_credit_reaches_the_proxy_and_a_top_up_unblocks(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, proxy_client, levels=2)
    key = ok(
        await org.owner.post(f"{org.base}/keys", json={"name": "k", "group_id": org.team}), 201
    )
    headers = {"authorization": f"Bearer {key['key']}"}
    assert (await proxy_client.post(CHAT, json=BODY, headers=headers)).status_code == 200
    ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
    blocked = await proxy_client.post(CHAT, json=BODY, headers=headers)
    assert blocked.status_code == 402, blocked.text
    assert "credit" in blocked.json()["error"]["message"]
    ok(await top_up(org.owner, org, "1"), 201)
    assert (await proxy_client.post(CHAT, json=BODY, headers=headers)).status_code == 200
    ok(await org.owner.patch(org.base, json={"credit_enforced": False}))
    ok(
        await org.owner.post(
            f"{org.credits}/adjustments", json={"amount_usd": "-1", "note": "take it back"}
        ),
        201,
    )
    # Not enforced: the ledger may go below zero, requests still pass.
    assert (await proxy_client.post(CHAT, json=BODY, headers=headers)).status_code == 200


# --- the counter store down -----------------------------------------------------------------------


@pytest.fixture
async def redis_down(postgres_url: str) -> Runtime:
    dead = make_settings(database_url=postgres_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    return Runtime.build(dead)


async def test_with_redis_down_top_ups_commit_and_the_enforced_balance_is_503(
    redis_down: Runtime,
) -> None:
    runtime = redis_down
    app = create_app(runtime.settings, runtime)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                org = await make_org(runtime, client, levels=2)
                ok(await org.owner.patch(org.base, json={"credit_enforced": False}))
                entry = ok(await top_up(org.owner, org, "4"), 201)
                assert entry["amount_usd"] == "4.000000000"
                assert (await balance(org.owner, org))["balance_usd"] == "4.000000000"
                ok(await org.owner.patch(org.base, json={"credit_enforced": True}))
                body = error(await org.owner.get(org.credits), 503)
                assert body["code"] == "service_unavailable"
                assert "counter store" in body["message"]
                ledger = ok(await org.owner.get(f"{org.credits}/ledger"))["items"]
                assert [line["balance_usd"] for line in ledger] == ["4.000000000"]
    finally:
        await runtime.close()
