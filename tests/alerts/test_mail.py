"""Alerts by mail, through a real SMTP server over loopback (aiosmtpd), on both backends: the
people a rule names (key owner, scope admins, named users) are each mailed once at their
current address, with a stable Message-ID and the Sluicegate headers; removed, frozen or
unreachable people are cancelled with the reason; a 4xx reply is retried, a 5xx fails; a line
break in a key's name adds no header; email channels are created (only where SMTP is
configured), shown only by their hint, delivered and test-sent like any channel; STARTTLS is
required of a server when the URL says smtp://. Time moves with the injectable clock."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from sluicegate.alerts.channel_config import channel_box, open_config, seal_config
from sluicegate.alerts.delivery import AlertDeliveryWorker
from sluicegate.alerts.delivery_rules import BREAKER_THRESHOLD
from sluicegate.alerts.mailer import AlertMailer
from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.alerts.outbox import AlertDraft, raise_alert, record_crossings
from sluicegate.alerts.payloads import Alert as AlertPayload
from sluicegate.app import create_app
from sluicegate.audit.models import AuditEvent
from sluicegate.core.clock import ManualClock, utcnow
from sluicegate.core.ids import new_id
from sluicegate.core.money import usd_to_nanos
from sluicegate.identity.models import User
from sluicegate.keys.models import ApiKey
from sluicegate.orgs.models import Membership, RoleBinding
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import error, ok
from tests.alerts.mailbox import Mailbox, running_mailbox
from tests.alerts.test_outbox import alerts_of, crossed_event, rule
from tests.conftest import make_settings
from tests.factories import Tenant, make_org, make_tenant, put_tenant_budget, tenant_owner
from tests.support import free_port, tls_pair

FROM = "Sluicegate Alerts <alerts@example.com>"
NO_SMTP_REASON = "no SMTP server is configured (SLUICEGATE_SMTP_URL"


# --- the world: a runtime on a moving clock, a worker, a mailbox ----------------------------------


@dataclass
class World:
    runtime: Runtime
    clock: ManualClock
    worker: AlertDeliveryWorker
    mailbox: Mailbox


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    # A database of the test's own: the delivery worker takes whatever is due in it.
    fixture = "fresh_postgres_url" if backend == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with running_mailbox() as running:
        yield running


@pytest.fixture
def mailbox(smtp: tuple[Mailbox, int]) -> Mailbox:
    return smtp[0]


def mail_settings(database_url: str, port: int | None, **values: Any) -> Settings:
    """Settings mailing through the loopback server on `port` (None: no SMTP configured)."""
    if port is not None:
        # A relay on loopback that offers no TLS: the operator says so explicitly.
        values.setdefault("smtp_url", f"smtp://127.0.0.1:{port}?starttls=false")
        values.setdefault("smtp_from", FROM)
    return make_settings(database_url=database_url, run_worker=False, **values)


@asynccontextmanager
async def world_of(settings: Settings, mailbox: Mailbox) -> AsyncIterator[World]:
    # The outbox stamps rows with the wall clock: the worker's clock starts a little later, so
    # what a test raises is due at once.
    clock = ManualClock(utcnow() + timedelta(minutes=5))
    runtime = Runtime.build(settings, clock=clock)
    await runtime.start()
    try:
        # The outbox is shared by every test of this process: nothing another test left
        # pending is this test's to send.
        async with runtime.unit_of_work() as session:
            await session.execute(
                update(AlertDelivery)
                .where(AlertDelivery.status == "pending")
                .values(status="cancelled")
            )
        worker = AlertDeliveryWorker(runtime)
        try:
            yield World(runtime, clock, worker, mailbox)
        finally:
            await worker.close()
    finally:
        await runtime.close()


@pytest.fixture
async def world(database_url: str, smtp: tuple[Mailbox, int]) -> AsyncIterator[World]:
    mailbox, port = smtp
    async with world_of(mail_settings(database_url, port), mailbox) as made:
        yield made


# --- people and rows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    user_id: str
    email: str


async def add_member(
    runtime: Runtime,
    org_id: str,
    group_id: str,
    role: str = "member",
    *,
    removed: bool = False,
    frozen: bool = False,
) -> Member:
    user_id = new_id("usr")
    email = f"{role}-{secrets.token_hex(6)}@example.com"
    async with runtime.unit_of_work() as session:
        session.add(User(id=user_id, email=email, status="frozen" if frozen else "active"))
        await session.flush()
        session.add(
            Membership(
                id=new_id("mem"),
                org_id=org_id,
                user_id=user_id,
                home_group_id=group_id,
                status="removed" if removed else "active",
            )
        )
        if not removed:
            session.add(
                RoleBinding(
                    id=new_id("rb"), org_id=org_id, group_id=group_id, user_id=user_id, role=role
                )
            )
    return Member(user_id, email)


async def email_of(runtime: Runtime, user_id: str) -> str:
    async with runtime.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user.email


async def deliveries(runtime: Runtime, alert_id: str) -> list[AlertDelivery]:
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(AlertDelivery)
            .where(AlertDelivery.alert_id == alert_id)
            .order_by(AlertDelivery.id)
        )
        return list(rows)


async def delivery(runtime: Runtime, delivery_id: str) -> AlertDelivery:
    async with runtime.sessions() as session:
        found = await session.get(AlertDelivery, delivery_id)
        assert found is not None
        return found


async def attempts(runtime: Runtime, delivery_id: str) -> list[AlertAttempt]:
    async with runtime.sessions() as session:
        rows = await session.scalars(
            select(AlertAttempt)
            .where(AlertAttempt.delivery_id == delivery_id)
            .order_by(AlertAttempt.attempt)
        )
        return list(rows)


async def threshold_alert(runtime: Runtime, tenant: Tenant, **recipients: Any) -> str:
    """A 90% threshold of the tenant's key budget crossed, for a rule naming `recipients`."""
    budget_id = await put_tenant_budget(
        runtime, tenant, usd_to_nanos("10"), enforcement="soft", thresholds=[90]
    )
    await rule(runtime, tenant.org_id, "budget.threshold", [], recipients=recipients)
    async with runtime.unit_of_work() as session:
        await record_crossings(session, [crossed_event(tenant, budget_id, 90, usd_to_nanos("9.5"))])
    [alert] = await alerts_of(runtime, tenant.org_id, "budget.threshold")
    return alert.id


async def person_delivery(world: World) -> tuple[Tenant, str]:
    """A threshold alert for the key's owner only; the id of their delivery."""
    tenant = await make_tenant(world.runtime)
    alert_id = await threshold_alert(world.runtime, tenant, key_owner=True)
    [row] = await deliveries(world.runtime, alert_id)
    return tenant, row.id


async def add_email_channel(runtime: Runtime, org_id: str, to: list[str]) -> str:
    channel_id = new_id("chn")
    box = channel_box(runtime.settings.secret)
    async with runtime.unit_of_work() as session:
        session.add(
            AlertChannel(
                id=channel_id,
                org_id=org_id,
                name=f"mail {channel_id}",
                kind="email",
                target_hint=f"email: {len(to)} addresses",
                config_sealed=seal_config(box, org_id, channel_id, {"to": to}),
            )
        )
    return channel_id


def seconds_until(moment: Any, now: Any) -> float:
    return float((moment - now).total_seconds())


# --- people, by mail ------------------------------------------------------------------------------


async def test_a_key_budget_alert_reaches_each_person_it_names_once_by_mail(world: World) -> None:
    runtime = world.runtime
    tenant = await make_tenant(runtime)  # the org's owner, who also owns the key
    admin = await add_member(runtime, tenant.org_id, tenant.group_id, "admin")
    named = await add_member(runtime, tenant.org_id, tenant.group_id)
    removed = await add_member(runtime, tenant.org_id, tenant.group_id, removed=True)
    frozen = await add_member(runtime, tenant.org_id, tenant.group_id, frozen=True)
    alert_id = await threshold_alert(
        runtime,
        tenant,
        key_owner=True,
        scope_admins=True,  # the owner (at the root) and the admin (at the key's group)
        user_ids=[named.user_id, removed.user_id, frozen.user_id, tenant.user_id],
    )
    # Mail goes to the address a person has when it is sent, not when the alert was raised.
    moved = f"moved-{secrets.token_hex(6)}@example.com"
    async with runtime.unit_of_work() as session:
        await session.execute(update(User).where(User.id == admin.user_id).values(email=moved))

    assert await world.worker.run_once() == 5
    assert await world.worker.run_once() == 0

    owner_email = await email_of(runtime, tenant.user_id)
    rows = {row.recipient_user_id: row for row in await deliveries(runtime, alert_id)}
    assert set(rows) == {
        tenant.user_id,
        admin.user_id,
        named.user_id,
        removed.user_id,
        frozen.user_id,
    }
    assert all(row.channel_id is None for row in rows.values())
    mails = world.mailbox.delivered
    assert sorted(address for mail in mails for address in mail.recipients) == sorted(
        [owner_email, moved, named.email]
    )
    by_address = {mail.recipients[0]: mail for mail in mails}
    for user_id, address in (
        (tenant.user_id, owner_email),
        (admin.user_id, moved),
        (named.user_id, named.email),
    ):
        row = rows[user_id]
        assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
            "delivered",
            1,
            250,
            None,
        )
        mail = by_address[address]
        assert mail.recipients == [address] and mail.sender == "alerts@example.com"
        message = mail.message
        assert message["Subject"] == "[Sluicegate] Budget at 90%: key test key"
        assert message["From"] == FROM and message["To"] == address
        assert message["Message-ID"] == f"<{row.id}@sluicegate>"
        assert message["X-Sluicegate-Delivery"] == row.id
        assert message["X-Sluicegate-Event"] == "budget.threshold"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message.get_content_type() == "text/plain"
        body = message.get_content().replace("\r\n", "\n")
        assert "has reached 90% of its limit: $9.50 spent of $10.00." in body
        assert "Spent: $9.50\n" in body and "Threshold: 90%\n" in body
        assert "Event: budget.threshold\n" in body and f"Organization: {tenant.org_id}\n" in body
        assert "Time: " in body and " UTC\n" in body
        assert [(a.attempt, a.outcome, a.status_code) for a in await attempts(runtime, row.id)] == [
            (1, "delivered", 250)
        ]
    assert (rows[removed.user_id].status, rows[removed.user_id].last_error) == (
        "cancelled",
        "the user is no longer an active member of the organization",
    )
    assert (rows[frozen.user_id].status, rows[frozen.user_id].last_error) == (
        "cancelled",
        "the user's account is frozen",
    )
    assert await attempts(runtime, rows[removed.user_id].id) == []

    # The alert log shows the people's deliveries: a recipient, no channel.
    app = create_app(runtime.settings, runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            api = await tenant_owner(runtime, http, tenant)
            detail = ok(await api.get(f"/api/v1/orgs/{tenant.org_id}/alerts/{alert_id}"))
            listed = ok(await api.get(f"/api/v1/orgs/{tenant.org_id}/alerts"))["items"]
    shown = {d["recipient_user_id"]: d for d in detail["deliveries"]}
    assert set(shown) == set(rows)
    assert all(d["channel_id"] is None for d in shown.values())
    assert shown[named.user_id]["status"] == "delivered"
    assert [(a["outcome"], a["status_code"]) for a in shown[named.user_id]["attempts_log"]] == [
        ("delivered", 250)
    ]
    assert shown[frozen.user_id]["last_error"] == "the user's account is frozen"
    [summary] = [a for a in listed if a["id"] == alert_id]
    assert {d["recipient_user_id"] for d in summary["deliveries"]} == set(rows)


async def test_without_smtp_people_and_email_channels_are_cancelled_saying_why(
    database_url: str, mailbox: Mailbox
) -> None:
    async with world_of(mail_settings(database_url, None), mailbox) as world:
        runtime = world.runtime
        tenant = await make_tenant(runtime)
        channel = await add_email_channel(runtime, tenant.org_id, ["oncall@example.com"])
        await rule(runtime, tenant.org_id, "budget.threshold", [channel])
        alert_id = await threshold_alert(runtime, tenant, key_owner=True)

        assert await world.worker.run_once() == 2
        rows = await deliveries(runtime, alert_id)
        assert {(row.channel_id, row.recipient_user_id) for row in rows} == {
            (channel, None),
            (None, tenant.user_id),
        }
        for row in rows:
            assert (row.status, row.attempts) == ("cancelled", 0)
            assert row.last_error is not None and NO_SMTP_REASON in row.last_error
            assert await attempts(runtime, row.id) == []
        world.clock.advance(3600)
        assert await world.worker.run_once() == 0
    assert mailbox.received == []


async def test_a_451_is_retried_with_the_same_message_id_and_the_log_shows_both(
    world: World,
) -> None:
    _tenant, delivery_id = await person_delivery(world)
    world.mailbox.reply("451 4.3.0 Mailbox busy, try again later")

    assert await world.worker.run_once() == 1
    row = await delivery(world.runtime, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 451)
    assert row.last_error == "SMTP 451: 4.3.0 Mailbox busy, try again later"
    assert 0.5 <= seconds_until(row.next_attempt_at, world.clock.now()) <= 1.0
    assert await world.worker.run_once() == 0  # not due yet

    world.clock.advance(seconds_until(row.next_attempt_at, world.clock.now()))
    assert await world.worker.run_once() == 1
    row = await delivery(world.runtime, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "delivered",
        2,
        250,
        None,
    )
    log = await attempts(world.runtime, delivery_id)
    assert [(a.attempt, a.outcome, a.status_code, a.error) for a in log] == [
        (1, "retry", 451, "SMTP 451: 4.3.0 Mailbox busy, try again later"),
        (2, "delivered", 250, None),
    ]
    # The same Message-ID both times: a mail system that had the first drops the second.
    first, second = world.mailbox.received
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Message-ID"] == f"<{delivery_id}@sluicegate>"
    assert [mail.accepted for mail in world.mailbox.received] == [False, True]


async def test_a_550_fails_at_once_and_is_never_retried(world: World) -> None:
    tenant, delivery_id = await person_delivery(world)
    address = await email_of(world.runtime, tenant.user_id)
    world.mailbox.reply(f"550 5.1.1 <{address}>: Mailbox unavailable")

    assert await world.worker.run_once() == 1
    world.clock.advance(3600)
    assert await world.worker.run_once() == 0

    row = await delivery(world.runtime, delivery_id)
    # The address is not repeated in the log (viewers read it).
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "failed",
        1,
        550,
        "SMTP 550: 5.1.1 <[hidden]>: Mailbox unavailable",
    )
    assert [a.outcome for a in await attempts(world.runtime, delivery_id)] == ["failed"]
    assert len(world.mailbox.received) == 1


async def test_a_refused_recipient_fails_and_a_busy_one_is_retried(world: World) -> None:
    tenant, delivery_id = await person_delivery(world)
    address = await email_of(world.runtime, tenant.user_id)
    world.mailbox.refused[address] = "450 4.2.1 Mailbox busy"
    assert await world.worker.run_once() == 1
    row = await delivery(world.runtime, delivery_id)
    assert (row.status, row.last_status_code) == ("pending", 450)

    world.mailbox.refused[address] = "550 5.1.1 No such user"
    world.clock.advance(seconds_until(row.next_attempt_at, world.clock.now()))
    assert await world.worker.run_once() == 1
    row = await delivery(world.runtime, delivery_id)
    assert (row.status, row.last_status_code, row.last_error) == (
        "failed",
        550,
        "SMTP 550: 5.1.1 No such user",
    )
    assert world.mailbox.received == []  # refused before DATA, both times


async def test_mail_to_a_person_not_sent_within_the_alerts_max_age_expires(world: World) -> None:
    _tenant, delivery_id = await person_delivery(world)
    max_age = timedelta(hours=world.runtime.settings.alert_max_age_hours)
    async with world.runtime.unit_of_work() as session:
        row = await session.get(AlertDelivery, delivery_id)
        assert row is not None
        await session.execute(
            update(Alert)
            .where(Alert.id == row.alert_id)
            .values(created_at=world.clock.now() - max_age - timedelta(minutes=1))
        )

    assert await world.worker.run_once() == 1
    row = await delivery(world.runtime, delivery_id)
    assert (row.status, row.attempts, row.last_error) == (
        "expired",
        0,
        "not sent within the alert's max age",
    )
    assert world.mailbox.received == []


async def test_an_unreachable_smtp_server_is_retried(database_url: str, mailbox: Mailbox) -> None:
    closed = free_port()
    async with world_of(mail_settings(database_url, closed), mailbox) as world:
        _tenant, delivery_id = await person_delivery(world)
        assert await world.worker.run_once() == 1
        row = await delivery(world.runtime, delivery_id)
        [attempt] = await attempts(world.runtime, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, None)
    assert row.last_error is not None
    assert row.last_error.startswith(f"could not reach the SMTP server 127.0.0.1:{closed}")
    assert (attempt.outcome, attempt.status_code) == ("retry", None)


async def test_a_line_break_in_a_key_name_adds_no_header(world: World) -> None:
    runtime = world.runtime
    tenant = await make_tenant(runtime)
    # Names are refused with control characters by the API; this one got in all the same.
    injected = "prod\r\nBcc: thief@evil.example\r\nX-Injected: yes\u2028Reply-To: x@evil.example"
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(ApiKey).where(ApiKey.id == tenant.key_id).values(name=injected)
        )
    await threshold_alert(runtime, tenant, key_owner=True)

    assert await world.worker.run_once() == 1

    [mail] = world.mailbox.delivered
    assert mail.recipients == [await email_of(runtime, tenant.user_id)]
    message = mail.message
    assert message["Subject"] == (
        "[Sluicegate] Budget at 90%: key prod Bcc: thief@evil.example X-Injected: yes "
        "Reply-To: x@evil.example"
    )
    for header in ("Bcc", "X-Injected", "Reply-To"):
        assert message[header] is None
    head = mail.raw.split(b"\r\n\r\n", 1)[0]
    for header in (b"Bcc:", b"X-Injected:", b"Reply-To:"):
        assert b"\n" + header not in head
    body = message.get_content().replace("\r\n", "\n")
    assert "Scope: key prod Bcc: thief@evil.example X-Injected: yes Reply-To: x@evil.example\n" in (
        body
    )


# --- email channels over the API ------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, smtp: tuple[Mailbox, int]) -> Settings:
    """The API tests' settings: mail through the loopback server, no background worker."""
    return mail_settings(database_url, smtp[1])


async def test_an_email_channel_is_created_changed_and_shows_only_how_many_addresses(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, app_client, "Acme mail")
    owner, base = org.owner, org.base
    body = {"name": "on-call mail", "kind": "email", "to": ["Oncall@Example.com", "b@example.org"]}
    created = ok(await owner.post(f"{base}/alerts/channels", json={**body}), 201)
    assert (created["kind"], created["target"], created["signing_secret"]) == (
        "email",
        "email: 2 addresses",
        None,
    )
    assert "to" not in created and "url" not in created
    shown = ok(await owner.get(f"{base}/alerts/channels/{created['id']}"))
    assert shown["target"] == "email: 2 addresses" and "to" not in shown

    async with runtime.sessions() as session:
        row = await session.get(AlertChannel, created["id"])
        assert row is not None
        config = open_config(
            channel_box(runtime.settings.secret), row.org_id, row.id, row.config_sealed
        )
        assert config == {"to": ["oncall@example.com", "b@example.org"]}
        assert "example.org" not in row.config_sealed and "example.org" not in row.target_hint

    changed = ok(
        await owner.patch(
            f"{base}/alerts/channels/{created['id']}",
            json={"to": ["c@example.net", "C@example.net"]},
        )
    )
    assert changed["target"] == "email: 1 address"
    problem = error(
        await owner.patch(
            f"{base}/alerts/channels/{created['id']}", json={"url": "https://alerts.example.com"}
        ),
        422,
    )
    assert problem["details"]["field"] == "url"
    problem = error(await owner.post(f"{base}/alerts/channels/{created['id']}/rotate-secret"), 422)
    assert "only webhook channels" in problem["message"]

    async with runtime.sessions() as session:
        audited = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.target_id == created["id"]))
        )
    assert [event.action for event in audited] == ["alert_channel.create", "alert_channel.update"]
    for event in audited:
        assert "example" not in str(event.before) + str(event.after)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "email"}, "to"),
        ({"kind": "email", "to": []}, "to"),
        ({"kind": "email", "to": ["not an address"]}, "to"),
        ({"kind": "email", "to": ["ops@example.com\r\nBcc: x@evil.example"]}, "to"),
        ({"kind": "email", "to": [f"p{i}@example.com" for i in range(21)]}, "to"),
        ({"kind": "email", "to": ["ops@example.com"], "url": "https://alerts.example.com"}, "url"),
        ({"kind": "webhook", "url": "https://alerts.example.com", "to": ["a@example.com"]}, "to"),
        ({"kind": "slack"}, "url"),
    ],
)
async def test_email_channels_take_1_to_20_checked_addresses_and_no_url(
    runtime: Runtime, app_client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    org = await make_org(runtime, app_client, "Acme mail")
    owner, base = org.owner, org.base
    problem = error(await owner.post(f"{base}/alerts/channels", json={"name": "x", **body}), 422)
    assert problem["details"]["field"].split(".")[0] == field
    assert problem["message"].startswith(field)
    assert ok(await owner.get(f"{base}/alerts/channels"))["items"] == []


async def test_an_email_channel_is_delivered_and_test_sent_by_mail(
    runtime: Runtime, app_client: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    org = await make_org(runtime, app_client, "Acme mail")
    owner, base = org.owner, org.base
    created = ok(
        await owner.post(
            f"{base}/alerts/channels",
            json={"name": "team", "kind": "email", "to": ["a@example.com", "b@example.com"]},
        ),
        201,
    )
    tested = ok(await owner.post(f"{base}/alerts/channels/{created['id']}/test"))
    assert (tested["delivered"], tested["status_code"], tested["error"]) == (True, 250, None)
    [mail] = mailbox.delivered
    assert sorted(mail.recipients) == ["a@example.com", "b@example.com"]
    assert mail.message["Subject"] == "[Sluicegate] Test alert for team"
    assert mail.message["X-Sluicegate-Event"] == "test"

    # And an alert to the channel goes out as one mail to both, through the worker.
    org_id = base.rsplit("/", 1)[1]
    await rule(runtime, org_id, "key.created", [created["id"]])
    async with runtime.unit_of_work() as session:
        alert_id = await raise_alert(
            session,
            AlertDraft(
                org_id=org_id,
                event="key.created",
                dedupe_key=new_id("dk"),
                severity="info",
                title="Key created: build",
                text="A key was created.",
                occurred_at=utcnow(),
            ),
        )
    assert alert_id is not None
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(AlertDelivery)
            .where(AlertDelivery.status == "pending", AlertDelivery.alert_id != alert_id)
            .values(status="cancelled")
        )
    worker = AlertDeliveryWorker(runtime)
    try:
        assert await worker.run_once() == 1
    finally:
        await worker.close()
    [row] = await deliveries(runtime, alert_id)
    assert (row.channel_id, row.recipient_user_id, row.status) == (
        created["id"],
        None,
        "delivered",
    )
    sent = mailbox.delivered[-1]
    assert sorted(sent.recipients) == ["a@example.com", "b@example.com"]
    assert sent.message["Message-ID"] == f"<{row.id}@sluicegate>"
    assert sent.message["To"] == "a@example.com, b@example.com"


async def test_an_email_channels_failures_open_its_circuit_breaker(world: World) -> None:
    tenant = await make_tenant(world.runtime)
    channel = await add_email_channel(world.runtime, tenant.org_id, ["team@example.com"])
    await rule(world.runtime, tenant.org_id, "budget.threshold", [channel])
    percents = [50, 60, 70, 80, 90, 95]
    budget_id = await put_tenant_budget(
        world.runtime, tenant, usd_to_nanos("10"), enforcement="soft", thresholds=percents
    )
    async with world.runtime.unit_of_work() as session:
        await record_crossings(
            session,
            [crossed_event(tenant, budget_id, p, usd_to_nanos("9.9")) for p in percents],
        )
    world.mailbox.reply(*["451 4.3.0 Try again later"] * 10)
    while len(world.mailbox.received) < BREAKER_THRESHOLD:
        assert await world.worker.run_once()
    async with world.runtime.sessions() as session:
        row = await session.get(AlertChannel, channel)
        assert row is not None
    assert row.failures == BREAKER_THRESHOLD and row.open_until is not None
    assert len(world.mailbox.received) == BREAKER_THRESHOLD  # the sixth waits for the breaker


# --- TLS ----------------------------------------------------------------------------------------


def alert_payload() -> AlertPayload:
    return AlertPayload(
        id="alt_tls",
        event="key.created",
        severity="info",
        title="Key created",
        text="A key was created.",
        org_id="org_tls",
        occurred_at=utcnow(),
    )


async def test_starttls_is_required_and_logs_in_over_it(tmp_path: Path) -> None:
    server_tls, client_tls = tls_pair(tmp_path)
    with running_mailbox(
        tls_context=server_tls, require_starttls=True, authenticator=("alerts", "s3cret pass")
    ) as (mailbox, port):
        settings = make_settings(
            smtp_url=f"smtp://alerts:s3cret%20pass@localhost:{port}", smtp_from=FROM
        )
        assert settings.smtp is not None and settings.smtp.starttls
        mailer = AlertMailer(settings.smtp, tls_context=client_tls)
        sent = await mailer.send(
            ["ops@example.com"], alert_payload(), delivery_id="dlv_tls", now=utcnow()
        )
        assert (sent.verdict, sent.status_code) == ("delivered", 250)
        assert mailbox.logins == [("alerts", "s3cret pass")]
        [mail] = mailbox.delivered
        assert mail.message["Message-ID"] == "<dlv_tls@sluicegate>"

        # The system's trust store does not know this certificate: nothing is sent.
        untrusted = await AlertMailer(settings.smtp).send(
            ["ops@example.com"], alert_payload(), delivery_id="dlv_tls2", now=utcnow()
        )
        assert untrusted.verdict == "retry" and "certificate verify failed" in (
            untrusted.error or ""
        )

        wrong = make_settings(smtp_url=f"smtp://alerts:wrong-one@localhost:{port}", smtp_from=FROM)
        assert wrong.smtp is not None
        refused = await AlertMailer(wrong.smtp, tls_context=client_tls).send(
            ["ops@example.com"], alert_payload(), delivery_id="dlv_tls3", now=utcnow()
        )
        assert (refused.verdict, refused.status_code) == ("failed", 535)
        assert refused.error is not None and "wrong-one" not in refused.error
        assert "SLUICEGATE_SMTP_URL" in refused.error
        assert len(mailbox.received) == 1


async def test_smtp_without_starttls_false_refuses_a_server_that_offers_no_starttls() -> None:
    with running_mailbox() as (mailbox, port):
        settings = make_settings(smtp_url=f"smtp://127.0.0.1:{port}", smtp_from=FROM)
        assert settings.smtp is not None
        refused = await AlertMailer(settings.smtp).send(
            ["ops@example.com"], alert_payload(), delivery_id="dlv_plain", now=utcnow()
        )
    assert (refused.verdict, refused.status_code) == ("failed", None)
    assert refused.error is not None and "does not offer STARTTLS" in refused.error
    assert "?starttls=false" in refused.error
    assert mailbox.received == []
