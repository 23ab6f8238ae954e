"""The alert log over the admin API: alerts with their deliveries, one alert with every attempt
of each delivery (as the worker wrote them), visibility by subtree (ALERT_READ), and a
channel's test-send through the real sender to a receiver over loopback. Another tenant's ids
are 404 everywhere."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select, update

from sluicegate.alerts.channel_config import channel_box, seal_config
from sluicegate.alerts.delivery import AlertDeliveryWorker
from sluicegate.alerts.models import Alert, AlertChannel, AlertDelivery
from sluicegate.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, new_secret, verify
from sluicegate.core.clock import ManualClock
from sluicegate.core.ids import new_id
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import Api, all_pages, error, ok
from tests.alerts.receiver import Receiver, running_receiver
from tests.conftest import make_settings
from tests.factories import add_group, join, make_org


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    """The test's own settings: the receiver's loopback network allowed, and no background
    worker in the app (each test runs the worker itself, on a clock it moves)."""
    url = request.getfixturevalue("postgres_url" if backend == "postgres" else "sqlite_url")
    return make_settings(
        database_url=url, outbound_allowed_networks="127.0.0.0/8", run_worker=False
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


async def add_channel(
    runtime: Runtime, org_id: str, url: str, *, kind: str = "webhook", secret: str | None = None
) -> str:
    channel_id = new_id("chn")
    config: dict[str, Any] = {"url": url}
    if kind == "webhook":
        config["secrets"] = [{"secret": secret or new_secret(), "expires_at": None}]
    async with runtime.unit_of_work() as session:
        session.add(
            AlertChannel(
                id=channel_id,
                org_id=org_id,
                name=f"On-call hook {channel_id}",
                kind=kind,
                target_hint="http://127.0.0.1",
                config_sealed=seal_config(
                    channel_box(runtime.settings.secret), org_id, channel_id, config
                ),
            )
        )
    return channel_id


async def add_alert(
    runtime: Runtime,
    org_id: str,
    *,
    group_id: str | None = None,
    event: str = "budget.threshold",
    occurred_at: datetime | None = None,
    channels: tuple[str, ...] = (),
    status: str = "delivered",
) -> str:
    """An alert as the outbox stores it, with a delivery per channel (already settled, unless
    `status` says pending)."""
    now = datetime.now(UTC)
    alert_id = new_id("alt")
    async with runtime.unit_of_work() as session:
        session.add(
            Alert(
                id=alert_id,
                org_id=org_id,
                event=event,
                dedupe_key=alert_id,
                severity="warning",
                title=f"{event} alert",
                text="Something worth knowing happened.",
                group_id=group_id,
                fields=[["Budget", "Research"]],
                details={"percent": 90},
                recipient_user_ids=[],
                occurred_at=occurred_at or now,
                created_at=now,
            )
        )
        await session.flush()
        for channel_id in channels:
            session.add(
                AlertDelivery(
                    id=new_id("dlv"),
                    org_id=org_id,
                    alert_id=alert_id,
                    channel_id=channel_id,
                    rule_id="arl_test",
                    status=status,
                    attempts=0 if status == "pending" else 1,
                    next_attempt_at=now,
                    created_at=now,
                    delivered_at=now if status == "delivered" else None,
                )
            )
    return alert_id


# --- list and detail ------------------------------------------------------------------------------


async def test_the_detail_shows_each_delivery_with_the_attempts_the_worker_made(
    settings: Settings, runtime: Runtime, app_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await make_org(runtime, app_client)
    channel = await add_channel(runtime, org.id, receiver.url)
    alert_id = await add_alert(runtime, org.id, channels=(channel,), status="pending")
    receiver.answer(503, body=b"maintenance")
    async with runtime.unit_of_work() as session:
        # Left by earlier tests of this process: not this worker's to send.
        await session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.status == "pending", AlertDelivery.channel_id != channel)
            .values(status="cancelled")
        )
    # The worker of another process, on a clock the test moves past the backoff.
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=1))
    worker_runtime = Runtime.build(settings, clock=clock)
    await worker_runtime.start()
    worker = AlertDeliveryWorker(worker_runtime)
    try:
        assert await worker.run_once() == 1
        clock.advance(2)
        assert await worker.run_once() == 1
    finally:
        await worker.close()
        await worker_runtime.close()

    detail = ok(await org.owner.get(f"{org.base}/alerts/{alert_id}"))
    assert detail["id"] == alert_id and detail["event"] == "budget.threshold"
    assert (detail["severity"], detail["title"], detail["group_id"]) == (
        "warning",
        "budget.threshold alert",
        None,
    )
    assert detail["fields"] == [["Budget", "Research"]] and detail["details"] == {"percent": 90}
    [sent] = detail["deliveries"]
    assert sent["id"] in receiver.keys()
    assert (sent["channel_id"], sent["rule_id"], sent["status"], sent["attempts"]) == (
        channel,
        "arl_test",
        "delivered",
        2,
    )
    assert (sent["last_status_code"], sent["last_error"]) == (200, None)
    assert sent["delivered_at"] is not None
    log = sent["attempts_log"]
    assert [(a["attempt"], a["outcome"], a["status_code"], a["error"]) for a in log] == [
        (1, "retry", 503, "HTTP 503: maintenance"),
        (2, "delivered", 200, None),
    ]
    assert all(isinstance(a["duration_ms"], int) and a["started_at"] for a in log)

    [listed] = ok(await org.owner.get(f"{org.base}/alerts"))["items"]
    assert listed["id"] == alert_id
    assert [d["id"] for d in listed["deliveries"]] == [sent["id"]]
    assert "attempts_log" not in listed["deliveries"][0]
    assert listed["deliveries"][0]["recipient_user_id"] is None  # a channel's, not a person's
    assert set(listed["deliveries"][0]) == {
        "id",
        "channel_id",
        "recipient_user_id",
        "rule_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    }


async def test_the_list_pages_newest_first_and_filters_by_event_and_time(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, app_client)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    ids = []
    for n, event in enumerate(["budget.threshold", "key.created", "budget.threshold"]):
        ids.append(
            await add_alert(runtime, org.id, event=event, occurred_at=start + timedelta(hours=n))
        )

    # Newest first by id: ids are time-ordered to the millisecond (and random within one).
    newest_first = sorted(ids, reverse=True)
    everything = await all_pages(org.owner, f"{org.base}/alerts", {"limit": 2})
    assert [a["id"] for a in everything if a["id"] in ids] == newest_first
    first = ok(await org.owner.get(f"{org.base}/alerts", params={"limit": 2}))
    assert len(first["items"]) == 2 and first["next_cursor"]
    budget = await all_pages(org.owner, f"{org.base}/alerts", {"event": "budget.threshold"})
    assert [a["id"] for a in budget] == [i for i in newest_first if i != ids[1]]
    later = await all_pages(
        org.owner, f"{org.base}/alerts", {"since": (start + timedelta(hours=1)).isoformat()}
    )
    assert [a["id"] for a in later if a["id"] in ids] == [i for i in newest_first if i != ids[0]]
    error(await org.owner.get(f"{org.base}/alerts", params={"event": "DROP TABLE"}), 422)
    error(await org.owner.get(f"{org.base}/alerts", params={"cursor": "nope"}), 422)
    error(await org.owner.get(f"{org.base}/alerts/alt_unknown"), 404)


async def test_readers_see_the_alerts_of_their_subtree_and_members_see_none(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, app_client)
    team = (await add_group(org, "team")).id
    squad = (await add_group(org, "squad", team)).id
    other_team = (await add_group(org, "other team")).id
    at_root = await add_alert(runtime, org.id)
    at_team = await add_alert(runtime, org.id, group_id=team)
    at_squad = await add_alert(runtime, org.id, group_id=squad)
    at_other = await add_alert(runtime, org.id, group_id=other_team)
    team_admin = await join(org, "admin", team)
    team_viewer = await join(org, "viewer", team)
    finance = await join(org, "viewer", org.root)
    member = await join(org, "member", team)

    async def seen(api: Api) -> set[str]:
        # Joining members raised member.joined alerts of their own: only these four are looked at.
        params = {"event": "budget.threshold"}
        return {a["id"] for a in await all_pages(api, f"{org.base}/alerts", params)}

    everything = {at_root, at_team, at_squad, at_other}
    assert await seen(org.owner) == everything
    assert await seen(finance) == everything
    assert await seen(team_admin) == {at_team, at_squad}
    assert await seen(team_viewer) == {at_team, at_squad}
    assert await seen(member) == set()

    for reader in (team_admin, team_viewer):
        assert ok(await reader.get(f"{org.base}/alerts/{at_squad}"))["id"] == at_squad
        for hidden in (at_root, at_other):
            problem = error(await reader.get(f"{org.base}/alerts/{hidden}"), 403)
            assert problem["details"]["action"] == "alert.read"
    error(await member.get(f"{org.base}/alerts/{at_team}"), 403)
    assert ok(await finance.get(f"{org.base}/alerts/{at_root}"))["id"] == at_root


# --- test-send ------------------------------------------------------------------------------------


async def test_a_test_send_goes_signed_to_the_channel_and_is_audited(
    runtime: Runtime, app_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await make_org(runtime, app_client)
    secret = new_secret()
    channel = await add_channel(runtime, org.id, receiver.url, secret=secret)

    answer = ok(await org.owner.post(f"{org.base}/alerts/channels/{channel}/test"))

    assert answer["delivered"] is True
    assert (answer["status_code"], answer["error"]) == (200, None)
    assert isinstance(answer["duration_ms"], int)
    [request] = receiver.requests
    assert request.headers["x-sluicegate-event"] == "test"
    assert request.headers["idempotency-key"] == request.headers["x-sluicegate-delivery"]
    assert request.headers["user-agent"].startswith("Sluicegate-Alerts/")
    body = orjson.loads(request.body)
    assert (body["event"], body["severity"], body["org_id"]) == ("test", "info", org.id)
    assert verify(
        secret,
        request.headers[TIMESTAMP_HEADER.lower()],
        request.headers[SIGNATURE_HEADER.lower()],
        request.body,
        now=time.time(),
    )
    async with runtime.sessions() as session:
        outbox = await session.scalar(
            select(func.count())
            .select_from(AlertDelivery)
            .where(AlertDelivery.channel_id == channel)
        )
    assert outbox == 0
    [event] = ok(await org.owner.get(f"{org.base}/audit", params={"action": "alert_channel.test"}))[
        "items"
    ]
    assert (event["target_type"], event["target_id"]) == ("alert_channel", channel)
    assert event["after"]["delivered"] is True


async def test_a_test_send_reports_what_went_wrong(
    runtime: Runtime, app_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await make_org(runtime, app_client)
    channel = await add_channel(runtime, org.id, receiver.url, kind="slack")
    receiver.answer(404, body=b"no_service")
    answer = ok(await org.owner.post(f"{org.base}/alerts/channels/{channel}/test"))
    assert (answer["delivered"], answer["status_code"], answer["error"]) == (
        False,
        404,
        "HTTP 404: no_service",
    )
    assert "blocks" in orjson.loads(receiver.requests[0].body)

    private = await add_channel(runtime, org.id, "http://10.20.30.40/hook")
    answer = ok(await org.owner.post(f"{org.base}/alerts/channels/{private}/test"))
    assert (answer["delivered"], answer["status_code"]) == (False, None)
    assert answer["error"].startswith("refused before sending: the channel's URL points to")
    assert len(receiver.requests) == 1


async def test_a_test_send_needs_an_admin_or_owner(
    runtime: Runtime, app_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    org = await make_org(runtime, app_client)
    team = (await add_group(org, "team")).id
    channel = await add_channel(runtime, org.id, receiver.url)
    path = f"{org.base}/alerts/channels/{channel}/test"
    for role, group in (("viewer", org.root), ("member", team)):
        problem = error(await (await join(org, role, group)).post(path), 403)
        assert problem["details"]["action"] == "channel.manage"
    assert ok(await (await join(org, "admin", team)).post(path))["delivered"] is True
    error(await org.owner.post(f"{org.base}/alerts/channels/chn_unknown/test"), 404)
    assert len(receiver.requests) == 1


# --- tenants --------------------------------------------------------------------------------------


async def test_another_tenants_alerts_and_channels_are_404(
    runtime: Runtime, app_client: httpx.AsyncClient, receiver: Receiver
) -> None:
    a = await make_org(runtime, app_client, "A")
    b = await make_org(runtime, app_client, "B")
    channel = await add_channel(runtime, a.id, receiver.url)
    alert_id = await add_alert(runtime, a.id, channels=(channel,))
    mine = await add_alert(runtime, b.id)

    for path in (f"{a.base}/alerts", f"{a.base}/alerts/{alert_id}"):
        assert error(await b.owner.get(path), 404)["code"] == "not_found"
    error(await b.owner.post(f"{a.base}/alerts/channels/{channel}/test"), 404)
    # Org A's ids inside org B's own routes are unknown ids there.
    error(await b.owner.get(f"{b.base}/alerts/{alert_id}"), 404)
    error(await b.owner.post(f"{b.base}/alerts/channels/{channel}/test"), 404)
    assert mine in {x["id"] for x in await all_pages(b.owner, f"{b.base}/alerts")}
    assert alert_id not in {x["id"] for x in await all_pages(b.owner, f"{b.base}/alerts")}
    assert receiver.requests == []
