"""The alert delivery worker against a real receiver over loopback, on both backends (the race
between workers on Postgres, where several processes share the outbox): each delivery is sent
once, signed, with the same Idempotency-Key on every attempt; failures are retried with a
capped, jittered backoff or given up (4xx, refused URLs, past the alert's max age); a channel's
circuit breaker holds its deliveries and lets one probe through; a dead worker's claims are
taken over after their lease. Time moves with the injectable clock, never by sleeping."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from sluicegate import __version__
from sluicegate.alerts.channel_config import channel_box, seal_config
from sluicegate.alerts.delivery import LEASE_SECONDS, AlertDeliveryWorker, retry_delay
from sluicegate.alerts.delivery_rules import (
    BREAKER_BASE_SECONDS,
    BREAKER_MAX_SECONDS,
    BREAKER_THRESHOLD,
    PER_CHANNEL_PER_ROUND,
    PROBE_SECONDS,
    alert_payload,
    breaker_pause,
)
from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.alerts.payloads import discord_body, slack_body, webhook_body
from sluicegate.alerts.sender import AlertSender
from sluicegate.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, new_secret, verify
from sluicegate.core.clock import ManualClock
from sluicegate.core.ids import new_id
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.alerts.receiver import Receiver, running_receiver
from tests.conftest import make_settings
from tests.factories import make_service_org
from tests.support import free_port

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# --- the world: a runtime on a moving clock, an org, a receiver -----------------------------------


@dataclass
class World:
    runtime: Runtime
    clock: ManualClock
    worker: AlertDeliveryWorker
    org_id: str
    receiver: Receiver

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def advance_to(self, moment: datetime) -> None:
        self.clock.advance((moment - self.clock.now()).total_seconds())


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    # A database of the test's own: the delivery worker takes whatever is due in it.
    fixture = "fresh_postgres_url" if backend == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


def settings_for(database_url: str, **values: Any) -> Settings:
    values.setdefault("outbound_allowed_networks", "127.0.0.0/8")
    return make_settings(database_url=database_url, **values)


@asynccontextmanager
async def opened(settings: Settings, clock: ManualClock) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(settings, clock=clock)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.close()


@asynccontextmanager
async def world_of(settings: Settings, receiver: Receiver) -> AsyncIterator[World]:
    clock = ManualClock(START)
    async with opened(settings, clock) as runtime:
        # The outbox is shared by every test of this process: nothing another test left
        # pending is this test's to send.
        async with runtime.unit_of_work() as session:
            await session.execute(
                update(AlertDelivery)
                .where(AlertDelivery.status == "pending")
                .values(status="cancelled")
            )
        worker = AlertDeliveryWorker(runtime, rng=random.Random(7))
        try:
            org = await make_service_org(runtime, "Acme alerts")
            yield World(runtime, clock, worker, org.id, receiver)
        finally:
            await worker.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.fixture
def max_retry_seconds() -> float:
    return 300.0


@pytest.fixture
async def world(
    database_url: str, receiver: Receiver, max_retry_seconds: float
) -> AsyncIterator[World]:
    settings = settings_for(database_url, alert_retry_max_seconds=max_retry_seconds)
    async with world_of(settings, receiver) as made:
        yield made


# --- rows, inserted the way the outbox stores them ------------------------------------------------


async def add_channel(
    world: World,
    *,
    kind: str = "webhook",
    url: str | None = None,
    secrets: list[dict[str, Any]] | None = None,
    enabled: bool = True,
) -> str:
    channel_id = new_id("chn")
    config: dict[str, Any] = {"url": url or world.receiver.url}
    if kind == "webhook":
        config["secrets"] = secrets if secrets is not None else [{"secret": new_secret()}]
    box = channel_box(world.runtime.settings.secret)
    async with world.runtime.unit_of_work() as session:
        session.add(
            AlertChannel(
                id=channel_id,
                org_id=world.org_id,
                name=f"{kind} channel {channel_id}",
                kind=kind,
                target_hint="http://127.0.0.1",
                config_sealed=seal_config(box, world.org_id, channel_id, config),
                enabled=enabled,
            )
        )
    return channel_id


async def add_alert(
    world: World,
    channel_ids: list[str],
    *,
    created_at: datetime | None = None,
    event: str = "budget.threshold",
    claimed_until: datetime | None = None,
) -> list[str]:
    """An alert with one pending delivery per channel, due now; the deliveries' ids."""
    now = world.clock.now()
    alert_id = new_id("alt")
    delivery_ids = [new_id("dlv") for _ in channel_ids]
    async with world.runtime.unit_of_work() as session:
        session.add(
            Alert(
                id=alert_id,
                org_id=world.org_id,
                event=event,
                dedupe_key=alert_id,
                severity="warning",
                title="Budget at 90%: <!channel> & team",
                text="The monthly budget of *Research* is at 90% (USD 90 of 100).",
                group_id=None,
                fields=[["Budget", "Research"], ["Spent", "USD 90.000000000"]],
                details={"budget_id": "bdg_1", "percent": 90},
                recipient_user_ids=[],
                occurred_at=now - timedelta(seconds=5),
                created_at=created_at or now,
            )
        )
        await session.flush()
        for delivery_id, channel_id in zip(delivery_ids, channel_ids, strict=True):
            session.add(
                AlertDelivery(
                    id=delivery_id,
                    org_id=world.org_id,
                    alert_id=alert_id,
                    channel_id=channel_id,
                    status="pending",
                    attempts=0,
                    next_attempt_at=now,
                    claimed_until=claimed_until,
                    created_at=now,
                )
            )
    return delivery_ids


async def delivery(world: World, delivery_id: str) -> AlertDelivery:
    async with world.runtime.sessions() as session:
        found = await session.get(AlertDelivery, delivery_id)
        assert found is not None
        return found


async def attempts(world: World, delivery_id: str) -> list[AlertAttempt]:
    async with world.runtime.sessions() as session:
        rows = await session.scalars(
            select(AlertAttempt)
            .where(AlertAttempt.delivery_id == delivery_id)
            .order_by(AlertAttempt.attempt)
        )
        return list(rows)


async def channel_row(world: World, channel_id: str) -> AlertChannel:
    async with world.runtime.sessions() as session:
        found = await session.get(AlertChannel, channel_id)
        assert found is not None
        return found


async def alert_of(world: World, delivery_id: str) -> Alert:
    async with world.runtime.sessions() as session:
        row = await session.get(AlertDelivery, delivery_id)
        assert row is not None
        alert = await session.get(Alert, row.alert_id)
        assert alert is not None
        return alert


def seconds_until(moment: datetime, now: datetime) -> float:
    return (moment - now).total_seconds()


# --- delivered once, signed -----------------------------------------------------------------------


async def test_a_webhook_is_delivered_once_signed_and_with_its_idempotency_key(
    world: World,
) -> None:
    current, rotated_out = new_secret(), new_secret()
    channel = await add_channel(
        world,
        secrets=[
            {"secret": current, "expires_at": None},
            # Rotated out an hour from now: deliveries are signed with both until then.
            {"secret": rotated_out, "expires_at": (START + timedelta(hours=1)).isoformat()},
        ],
    )
    [delivery_id] = await add_alert(world, [channel])

    assert await world.worker.run_once() == 1
    assert await world.worker.run_once() == 0

    [request] = world.receiver.requests
    assert request.method == "POST" and request.path == "/hook"
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"Sluicegate-Alerts/{__version__}"
    assert headers["idempotency-key"] == delivery_id
    assert headers["x-sluicegate-delivery"] == delivery_id
    assert headers["x-sluicegate-event"] == "budget.threshold"
    alert = await alert_of(world, delivery_id)
    assert request.body == webhook_body(alert_payload(alert))
    assert orjson.loads(request.body)["id"] == alert.id
    stamp, signature = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert stamp == str(int(START.timestamp()))
    for secret in (current, rotated_out):
        assert verify(secret, stamp, signature, request.body, now=START.timestamp())
    assert not verify(new_secret(), stamp, signature, request.body, now=START.timestamp())

    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "delivered",
        1,
        200,
        None,
    )
    assert row.delivered_at == START and row.claimed_until is None
    [attempt] = await attempts(world, delivery_id)
    assert (attempt.attempt, attempt.outcome, attempt.status_code, attempt.error) == (
        1,
        "delivered",
        200,
        None,
    )
    assert attempt.duration_ms >= 0


async def test_slack_and_discord_get_their_own_bodies_unsigned(world: World) -> None:
    slack = await add_channel(world, kind="slack", url=world.receiver.url + "/slack")
    discord = await add_channel(world, kind="discord", url=world.receiver.url + "/discord")
    slack_delivery, discord_delivery = await add_alert(world, [slack, discord])

    assert await world.worker.run_once() == 2

    by_path = {request.path: request for request in world.receiver.requests}
    payload = alert_payload(await alert_of(world, slack_delivery))
    assert by_path["/hook/slack"].body == slack_body(payload)
    assert by_path["/hook/discord"].body == discord_body(payload)
    assert "&lt;!channel&gt; &amp; team" in by_path["/hook/slack"].body.decode()
    assert orjson.loads(by_path["/hook/discord"].body)["allowed_mentions"] == {"parse": []}
    for request, delivery_id in (
        (by_path["/hook/slack"], slack_delivery),
        (by_path["/hook/discord"], discord_delivery),
    ):
        assert request.headers["idempotency-key"] == delivery_id
        assert TIMESTAMP_HEADER.lower() not in request.headers
        assert (await delivery(world, delivery_id)).status == "delivered"


async def test_the_connection_goes_to_the_checked_address_keeping_the_host(
    database_url: str, receiver: Receiver
) -> None:
    """The host is resolved once, by the egress check, and the connection goes to the address
    it approved: `hooks.example.test` resolves nowhere else (.test is reserved), so a second
    resolution would fail. The receiver still sees the URL's host."""
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["127.0.0.1"]

    async with world_of(settings_for(database_url), receiver) as made:
        worker = AlertDeliveryWorker(made.runtime, resolve=resolve)
        try:
            channel = await add_channel(made, url=f"http://hooks.example.test:{receiver.port}/in")
            await add_alert(made, [channel])
            assert await worker.run_once() == 1
        finally:
            await worker.close()
    [received] = receiver.requests
    assert received.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert received.path == "/in"
    assert resolved == ["hooks.example.test"]


# --- retries, backoff, giving up ------------------------------------------------------------------


async def test_a_500_is_retried_and_the_log_shows_both_attempts(world: World) -> None:
    channel = await add_channel(world)
    [delivery_id] = await add_alert(world, [channel])
    world.receiver.answer(500, body=b"upstream   broke\n")

    assert await world.worker.run_once() == 1
    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
    assert row.last_error == "HTTP 500: upstream broke"
    assert 0.5 <= seconds_until(row.next_attempt_at, START) <= 1.0
    assert await world.worker.run_once() == 0  # not due yet

    world.advance_to(row.next_attempt_at)
    assert await world.worker.run_once() == 1
    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "delivered",
        2,
        200,
        None,
    )
    log = await attempts(world, delivery_id)
    assert [(a.attempt, a.outcome, a.status_code) for a in log] == [
        (1, "retry", 500),
        (2, "delivered", 200),
    ]
    assert log[0].error == "HTTP 500: upstream broke" and log[1].error is None
    assert log[1].started_at == row.next_attempt_at
    # The same key both times: a receiver can drop the second if it had handled the first.
    assert world.receiver.keys() == [delivery_id, delivery_id]


@pytest.mark.parametrize("max_retry_seconds", [4.0])
async def test_backoff_doubles_with_full_jitter_up_to_the_cap(world: World) -> None:
    channel = await add_channel(world)
    [delivery_id] = await add_alert(world, [channel])
    world.receiver.always(503)
    ceilings = []
    for attempt in range(1, BREAKER_THRESHOLD):  # before the breaker opens
        assert await world.worker.run_once() == 1
        row = await delivery(world, delivery_id)
        assert (row.attempts, row.status) == (attempt, "pending")
        delay = seconds_until(row.next_attempt_at, world.clock.now())
        ceiling = min(4.0, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        ceilings.append(ceiling)
        world.advance_to(row.next_attempt_at)
    assert ceilings == [1.0, 2.0, 4.0, 4.0]
    assert [a.outcome for a in await attempts(world, delivery_id)] == ["retry"] * 4


@pytest.mark.parametrize("max_retry_seconds", [4.0])
async def test_a_429_waits_its_retry_after_up_to_the_cap(world: World) -> None:
    channel = await add_channel(world)
    first, second = await add_alert(world, [channel]), await add_alert(world, [channel])
    world.receiver.answer(429, headers={"Retry-After": "3"})
    world.receiver.answer(429, headers={"Retry-After": "3600"})

    assert await world.worker.run_once() == 2
    waits = [
        seconds_until((await delivery(world, key)).next_attempt_at, START)
        for key in world.receiver.keys()
    ]
    assert sorted(world.receiver.keys()) == sorted(first + second)
    assert waits == [3.0, 4.0]  # as asked; then as asked but no longer than the cap


@given(
    attempt=st.integers(1, 10_000),
    cap=st.floats(1, 3600),
    retry_after=st.none() | st.floats(0, 10**6),
    seed=st.integers(0, 2**32),
)
def test_every_retry_delay_is_within_its_jitter_window_and_the_cap(
    attempt: int, cap: float, retry_after: float | None, seed: int
) -> None:
    delay = retry_delay(attempt, cap, random.Random(seed), retry_after)
    ceiling = min(cap, 2.0 ** min(attempt - 1, 32))
    assert 0 < delay <= cap
    if retry_after is None:
        assert ceiling / 2 <= delay <= ceiling
    else:
        assert delay >= min(retry_after, cap)


@given(failures=st.integers(BREAKER_THRESHOLD, 10_000), cap=st.floats(1, 3600))
def test_the_breaker_pause_doubles_from_30_seconds_to_10_minutes_within_the_retry_cap(
    failures: int, cap: float
) -> None:
    failed_probes = failures - BREAKER_THRESHOLD
    doubling = [30.0, 60.0, 120.0, 240.0, 480.0]
    expected = doubling[failed_probes] if failed_probes < len(doubling) else 600.0
    assert breaker_pause(failures, cap) == min(expected, cap)
    assert BREAKER_BASE_SECONDS == doubling[0] and BREAKER_MAX_SECONDS == 600.0


async def test_a_404_fails_at_once_and_is_never_retried(world: World) -> None:
    channel = await add_channel(world)
    [delivery_id] = await add_alert(world, [channel])
    world.receiver.answer(404, body=b"no such hook")

    assert await world.worker.run_once() == 1
    world.advance(3600)
    assert await world.worker.run_once() == 0

    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == (
        "failed",
        1,
        404,
        "HTTP 404: no such hook",
    )
    assert [a.outcome for a in await attempts(world, delivery_id)] == ["failed"]
    assert len(world.receiver.requests) == 1


async def test_a_redirect_is_not_followed_and_fails(world: World) -> None:
    channel = await add_channel(world)
    [delivery_id] = await add_alert(world, [channel])
    world.receiver.answer(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    assert await world.worker.run_once() == 1
    row = await delivery(world, delivery_id)
    assert (row.status, row.last_status_code) == ("failed", 302)
    assert row.last_error is not None and "redirects are not followed" in row.last_error
    assert len(world.receiver.requests) == 1


async def test_an_unreachable_receiver_is_retried(world: World) -> None:
    channel = await add_channel(world, url=f"http://127.0.0.1:{free_port()}/closed")
    [delivery_id] = await add_alert(world, [channel])

    assert await world.worker.run_once() == 1
    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, None)
    assert row.last_error is not None and row.last_error.startswith("could not reach 127.0.0.1")
    [attempt] = await attempts(world, delivery_id)
    assert (attempt.outcome, attempt.status_code) == ("retry", None)


async def test_a_slow_receiver_or_a_hanging_resolver_is_retried_after_the_timeout(
    receiver: Receiver,
) -> None:
    """The timeout covers the whole attempt, resolving the host included (the worker's is
    SEND_TIMEOUT_SECONDS; a short one here)."""

    async def hanging(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        return ["127.0.0.1"]

    payload = alert_payload(
        Alert(
            id="alt_x",
            org_id="org_x",
            event="budget.threshold",
            severity="info",
            title="t",
            text="",
            fields=[],
            details={},
            occurred_at=START,
        )
    )
    receiver.always(200, delay=1.0)
    networks = make_settings(outbound_allowed_networks="127.0.0.0/8").outbound_allowed
    for url in (receiver.url, f"http://hooks.example.test:{receiver.port}/"):
        async with AlertSender(networks, resolve=hanging, timeout=0.2) as sender:
            result = await sender.send(
                "slack", {"url": url}, payload, delivery_id="dlv_x", now=START
            )
        assert (result.verdict, result.status_code) == ("retry", None)
        assert result.error == "no answer within 0.2 s"
    assert len(receiver.requests) == 1  # the resolver never answered for the second


async def test_a_delivery_failing_past_the_alerts_max_age_expires(world: World) -> None:
    max_age = timedelta(hours=world.runtime.settings.alert_max_age_hours)
    channel = await add_channel(world)
    # The alert turns too old 0.2 s from now: the first retry (0.5 s at the soonest) is too late.
    [failing] = await add_alert(
        world, [channel], created_at=START - max_age + timedelta(seconds=0.2)
    )
    # This one was never sent in time (the workers were down): given up without an attempt.
    [stale] = await add_alert(world, [channel], created_at=START - max_age - timedelta(hours=1))
    world.receiver.always(500)

    assert await world.worker.run_once() == 2

    row = await delivery(world, failing)
    assert (row.status, row.attempts, row.last_status_code) == ("expired", 1, 500)
    assert [a.outcome for a in await attempts(world, failing)] == ["expired"]
    row = await delivery(world, stale)
    assert (row.status, row.attempts) == ("expired", 0)
    assert row.last_error == "not sent within the alert's max age"
    assert await attempts(world, stale) == []
    assert world.receiver.keys() == [failing]


async def test_a_url_on_loopback_is_refused_at_send_time_when_not_allowed(
    database_url: str, receiver: Receiver
) -> None:
    """The URL passed when the channel was saved; the operator has since dropped the network
    from SLUICEGATE_OUTBOUND_ALLOWED_NETWORKS. The check runs before every attempt."""
    settings = settings_for(database_url, outbound_allowed_networks="")
    async with world_of(settings, receiver) as made:
        channel = await add_channel(made)
        [delivery_id] = await add_alert(made, [channel])
        assert await made.worker.run_once() == 1
        row = await delivery(made, delivery_id)
        log = await attempts(made, delivery_id)
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, None)
    assert row.last_error is not None
    assert row.last_error.startswith("refused before sending: the channel's URL points to")
    assert "127.0.0.1" in row.last_error and "OUTBOUND_ALLOWED_NETWORKS" in row.last_error
    assert [(a.outcome, a.error) for a in log] == [("failed", row.last_error)]
    assert receiver.requests == []


# --- the circuit breaker --------------------------------------------------------------------------


async def test_the_breaker_opens_after_five_failures_holds_deliveries_then_probes(
    world: World,
) -> None:
    channel = await add_channel(world)
    deliveries = [(await add_alert(world, [channel]))[0] for _ in range(6)]
    world.receiver.always(500)

    # One channel's deliveries go one after the other, a few per round.
    assert await world.worker.run_once() == PER_CHANNEL_PER_ROUND
    assert (await channel_row(world, channel)).failures == 3
    # The 4th and 5th fail and the breaker opens; the 6th waits for it, never attempted.
    assert await world.worker.run_once() == 3
    assert len(world.receiver.requests) == 5
    row = await channel_row(world, channel)
    opened_until = START + timedelta(seconds=BREAKER_BASE_SECONDS)
    assert (row.failures, row.open_until) == (BREAKER_THRESHOLD, opened_until)
    sixth = await delivery(world, deliveries[5])
    assert (sixth.attempts, sixth.status, sixth.next_attempt_at) == (0, "pending", opened_until)

    # The retries come due while it is open: they are put off to its end, no attempt counted.
    world.advance(2)
    assert await world.worker.run_once() == 5
    assert len(world.receiver.requests) == 5
    for delivery_id in deliveries:
        row_ = await delivery(world, delivery_id)
        assert row_.next_attempt_at == opened_until and row_.attempts <= 1

    # Half-open: one delivery goes as the probe; the others wait for its outcome.
    world.advance_to(opened_until)
    world.receiver.always(200)
    assert await world.worker.run_once() == 6
    assert len(world.receiver.requests) == 6
    row = await channel_row(world, channel)
    assert (row.failures, row.open_until) == (0, None)
    assert await world.worker.run_once() == 0

    world.advance(PROBE_SECONDS)
    handled = 1
    while handled:  # the rest follow, round after round, until nothing is due
        handled = await world.worker.run_once()
    statuses = [(await delivery(world, d)).status for d in deliveries]
    assert statuses == ["delivered"] * 6
    assert sorted(world.receiver.keys()[5:]) == sorted(deliveries)


async def test_a_failed_probe_opens_the_breaker_twice_as_long(world: World) -> None:
    channel = await add_channel(world)
    for _ in range(BREAKER_THRESHOLD + 1):
        await add_alert(world, [channel])
    world.receiver.always(500)
    while len(world.receiver.requests) < BREAKER_THRESHOLD:
        assert await world.worker.run_once()
    opened_until = (await channel_row(world, channel)).open_until
    assert opened_until == START + timedelta(seconds=BREAKER_BASE_SECONDS)

    world.advance_to(opened_until)
    await world.worker.run_once()
    assert len(world.receiver.requests) == BREAKER_THRESHOLD + 1  # one probe, which failed
    row = await channel_row(world, channel)
    assert row.failures == BREAKER_THRESHOLD + 1
    assert row.open_until == opened_until + timedelta(seconds=2 * BREAKER_BASE_SECONDS)


@pytest.mark.parametrize("max_retry_seconds", [5.0])
async def test_the_breaker_never_holds_a_delivery_longer_than_the_retry_cap(
    world: World,
) -> None:
    channel = await add_channel(world)
    for _ in range(BREAKER_THRESHOLD):
        await add_alert(world, [channel])
    world.receiver.always(500)
    while len(world.receiver.requests) < BREAKER_THRESHOLD:
        assert await world.worker.run_once()
    assert (await channel_row(world, channel)).open_until == START + timedelta(seconds=5)


async def test_deliveries_of_a_disabled_or_deleted_channel_are_cancelled(world: World) -> None:
    disabled = await add_channel(world, enabled=False)
    deleted = await add_channel(world)
    live = await add_channel(world)
    async with world.runtime.unit_of_work() as session:
        await session.execute(
            update(AlertChannel).where(AlertChannel.id == deleted).values(deleted_at=START)
        )
    first, second, third = await add_alert(world, [disabled, deleted, live])

    assert await world.worker.run_once() == 3

    assert ((await delivery(world, first)).status, (await delivery(world, first)).last_error) == (
        "cancelled",
        "the channel was disabled",
    )
    assert (await delivery(world, second)).last_error == "the channel was deleted"
    assert (await delivery(world, third)).status == "delivered"
    assert world.receiver.keys() == [third]
    assert await attempts(world, first) == []


# --- leases and several workers -------------------------------------------------------------------


async def test_a_claim_whose_worker_died_is_taken_over_after_its_lease(world: World) -> None:
    channel = await add_channel(world)
    # A worker claimed it and died before it could record anything.
    [delivery_id] = await add_alert(
        world, [channel], claimed_until=START + timedelta(seconds=LEASE_SECONDS)
    )

    assert await world.worker.run_once() == 0
    world.advance(LEASE_SECONDS + 1)
    assert await world.worker.run_once() == 1
    row = await delivery(world, delivery_id)
    assert (row.status, row.attempts, row.claimed_until) == ("delivered", 1, None)
    assert world.receiver.keys() == [delivery_id]


async def test_the_worker_runs_in_the_background_wakes_on_demand_and_stops(
    world: World,
) -> None:
    channel = await add_channel(world)
    await world.worker.start()
    [delivery_id] = await add_alert(world, [channel])
    world.worker.wake()
    async with asyncio.timeout(5):
        while not world.receiver.requests:
            await asyncio.sleep(0.01)
    await world.worker.close()
    assert world.receiver.keys() == [delivery_id]
    assert (await delivery(world, delivery_id)).status == "delivered"


async def test_a_closing_worker_finishes_its_send_and_gives_back_the_rest(world: World) -> None:
    channel = await add_channel(world)
    deliveries = [(await add_alert(world, [channel]))[0] for _ in range(PER_CHANNEL_PER_ROUND)]
    world.receiver.always(200, delay=0.2)
    await world.worker.start()
    world.worker.wake()
    async with asyncio.timeout(5):
        while not world.receiver.requests:
            await asyncio.sleep(0.01)
    await world.worker.close()  # while the first send waits for its answer

    rows = [await delivery(world, d) for d in deliveries]
    [sent] = world.receiver.keys()
    assert [(r.status, r.attempts) for r in rows if r.id == sent] == [("delivered", 1)]
    assert [(r.status, r.attempts, r.claimed_until) for r in rows if r.id != sent] == [
        ("pending", 0, None)
    ] * (PER_CHANNEL_PER_ROUND - 1)
    # Given back, not left to their lease: the next worker sends them at once.
    assert await world.worker.run_once() == PER_CHANNEL_PER_ROUND - 1


@pytest.fixture
def postgres_settings(postgres_url: str) -> Settings:
    return settings_for(postgres_url)


async def test_two_workers_racing_over_the_outbox_send_each_delivery_once(
    postgres_settings: Settings, receiver: Receiver
) -> None:
    async with world_of(postgres_settings, receiver) as made:
        channels = [await add_channel(made) for _ in range(8)]
        expected = []
        for _ in range(4):
            expected += await add_alert(made, channels)
        receiver.always(200, delay=0.01)
        async with opened(postgres_settings, made.clock) as other_runtime:
            workers = [made.worker, AlertDeliveryWorker(other_runtime)]
            try:
                for worker in workers:
                    await worker.start()
                async with asyncio.timeout(30):
                    while len(receiver.requests) < len(expected):
                        await asyncio.sleep(0.02)
                        for worker in workers:
                            worker.wake()
                    # Both are given a last chance to send something twice.
                    for _ in range(3):
                        assert all(n == 0 for n in [await w.run_once() for w in workers]), (
                            "a delivered row was claimed again"
                        )
            finally:
                for worker in workers:
                    await worker.close()
        states = [(await delivery(made, d)).status for d in expected]
    assert sorted(receiver.keys()) == sorted(expected)
    assert states == ["delivered"] * len(expected)


async def test_rows_locked_by_another_workers_claim_are_skipped_not_waited_for(
    postgres_settings: Settings, receiver: Receiver
) -> None:
    async with world_of(postgres_settings, receiver) as made:
        channels = [await add_channel(made) for _ in range(2)]
        locked, free = await add_alert(made, channels)
        async with made.runtime.sessions() as other, other.begin():
            # Another worker's claim transaction, in flight, holding its row.
            await other.execute(
                text("SELECT id FROM alert_deliveries WHERE id = :id FOR UPDATE"), {"id": locked}
            )
            async with asyncio.timeout(5):
                assert await made.worker.run_once() == 1
        assert receiver.keys() == [free]
        assert (await delivery(made, locked)).status == "pending"
        assert await made.worker.run_once() == 1
        assert receiver.keys() == [free, locked]
