"""The alert delivery worker: the consumer of the outbox (alerts/models.py AlertDelivery).

A round claims the due deliveries, sends them, and records each attempt:
- claim: pending rows due now whose lease ran out, oldest first, locked with SKIP LOCKED on
  Postgres; each gets a lease (`claimed_until`) and the claim commits BEFORE anything is sent.
  So any number of workers, in `serve` and `sluicegate worker` processes, never send one
  delivery at the same time, and a worker killed mid-send leaves its rows to whoever finds
  them after the lease (the receiver sees the same Idempotency-Key again and may drop it);
- send (alerts/sender.py): channels side by side, the deliveries of one channel one after the
  other, so its circuit breaker sees every failure before the next attempt;
- record: the attempt in the delivery log and the delivery's new state: delivered; retried
  after an exponential backoff with full jitter; failed for good (another 4xx, a refused URL);
  or expired once the next attempt would come after the alert's max age.

Each channel has a circuit breaker, kept in its row so every worker shares it: attempts that
did not deliver are counted, a delivery resets the count, and at BREAKER_THRESHOLD in a row the
breaker opens for 30 s, doubling with each failed probe up to 10 minutes, and never longer
than SLUICEGATE_ALERT_RETRY_MAX_SECONDS (the longest pause between two attempts of a delivery,
which the breaker must not stretch). While open, the channel's due deliveries wait for it (no
attempt is counted); once it is due one delivery goes as the probe (half-open) and the others
wait for its outcome. Deliveries of a disabled or
deleted channel, or of a deleted org, are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from sluicegate.alerts import log_repository as repository
from sluicegate.alerts import payloads
from sluicegate.alerts.channel_config import channel_box
from sluicegate.alerts.models import Alert, AlertAttempt, AlertChannel, AlertDelivery
from sluicegate.alerts.sender import SEND_TIMEOUT_SECONDS, AlertSender, SendResult, cut
from sluicegate.core.egress import Resolver, system_resolver
from sluicegate.core.ids import new_id
from sluicegate.core.sealing import SecretBox
from sluicegate.runtime import Runtime

# An idle worker looks for due deliveries this often (wake() skips the pause).
POLL_SECONDS = 0.5
# Deliveries claimed per round.
BATCH_SIZE = 20
# Of one channel at most this many are sent per round, one after the other: a round then takes
# at most this many send timeouts (channels go side by side), well inside the lease.
PER_CHANNEL_PER_ROUND = 3
# A claimed delivery is left alone this long: longer than a round can take, so only a worker
# that died (or hung) loses its claim, never a slow one.
LEASE_SECONDS = 60.0
# Backoff of retries: the n-th retry waits a random time in [b/2, b], b = base * 2^(n-1),
# b capped by SLUICEGATE_ALERT_RETRY_MAX_SECONDS. Jitter keeps retries of many deliveries that
# failed together from arriving together.
RETRY_BASE_SECONDS = 1.0
# The circuit breaker: opens after this many attempts in a row that did not deliver...
BREAKER_THRESHOLD = 5
# ...for 30 s, doubled at each failed probe, at most 10 minutes (and at most the retry cap).
BREAKER_BASE_SECONDS = 30.0
BREAKER_MAX_SECONDS = 600.0
# While a probe is out the breaker stays shut this long for everyone else: the probe's send
# timeout and a margin; a worker that dies with the probe lets the next one probe after it.
PROBE_SECONDS = SEND_TIMEOUT_SECONDS + 5.0
# After a failed round (database down), wait this long before the next.
RETRY_ROUND_SECONDS = 1.0
# A closing worker waits this long for its round in progress: about one send.
STOP_TIMEOUT_SECONDS = SEND_TIMEOUT_SECONDS + 2.0

log = logging.getLogger("sluicegate.alerts")


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker holds the lease of, with what sending it needs."""

    delivery_id: str
    org_id: str
    channel_id: str
    kind: str
    config_sealed: str
    alert: payloads.Alert
    deadline: datetime  # the alert's created_at + max age: no attempt after it


def retry_delay(attempt: int, cap: float, rng: random.Random, retry_after: float | None) -> float:
    """Seconds before the next attempt after failed attempt number `attempt` (1-based)."""
    ceiling = min(cap, RETRY_BASE_SECONDS * 2.0 ** min(attempt - 1, 32))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def breaker_pause(failures: int, cap: float) -> float:
    """How long the breaker stays open after `failures` (>= BREAKER_THRESHOLD) in a row;
    `cap` is the retry cap (SLUICEGATE_ALERT_RETRY_MAX_SECONDS)."""
    opened = failures - BREAKER_THRESHOLD  # 0 the first time, +1 per failed probe
    return min(BREAKER_MAX_SECONDS, cap, BREAKER_BASE_SECONDS * 2.0 ** min(opened, 32))


SEVERITIES: dict[str, payloads.Severity] = {
    "info": "info",
    "warning": "warning",
    "critical": "critical",
}


def alert_payload(alert: Alert) -> payloads.Alert:
    """The alert as the bodies are rendered from it."""
    return payloads.Alert(
        id=alert.id,
        event=alert.event,
        severity=SEVERITIES.get(alert.severity, "info"),
        title=alert.title,
        text=alert.text,
        org_id=alert.org_id,
        occurred_at=alert.occurred_at,
        fields=tuple((str(label), str(value)) for label, value in alert.fields),
        details=dict(alert.details),
    )


class AlertDeliveryWorker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        resolve: Resolver = system_resolver,
        rng: random.Random | None = None,
    ) -> None:
        self._runtime = runtime
        self._resolve = resolve
        self._rng = rng or random.SystemRandom()
        self._box: SecretBox | None = None
        self._sender: AlertSender | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="alert-delivery")

    def wake(self) -> None:
        """Look for due deliveries now instead of after the poll pause (an outbox kick after a
        commit)."""
        self._wake.set()

    async def close(self) -> None:
        """Finish the round in progress (within STOP_TIMEOUT_SECONDS), then stop. Deliveries
        claimed and not yet sent are given back at once; one cut mid-send is retried after its
        lease."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._sender is not None:
            await self._sender.aclose()
            self._sender = None

    async def run(self) -> None:
        """Deliver until closed; a failed round is logged and retried, never fatal."""
        while not self._stopping:
            try:
                handled = await self.run_once()
            except asyncio.CancelledError:
                raise
            except (SQLAlchemyError, OSError):
                log.warning("alert delivery round failed; retrying", exc_info=True)
                await self._pause(RETRY_ROUND_SECONDS)
                continue
            except Exception:
                log.exception("alert delivery round failed unexpectedly; retrying")
                await self._pause(RETRY_ROUND_SECONDS)
                continue
            if not handled:
                await self._pause(POLL_SECONDS)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    # --- one round -----------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One round; returns how many deliveries it handled (sent, cancelled, expired, or put
        off while their channel's breaker is open)."""
        claims, settled = await self._claim()
        by_channel: dict[str, list[Claim]] = {}
        for claim in claims:
            by_channel.setdefault(claim.channel_id, []).append(claim)
        outcomes = await asyncio.gather(
            *(self._work_channel(group) for group in by_channel.values()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # Its claims stay leased and are tried again once the lease runs out.
                log.error("alert delivery failed unexpectedly", exc_info=outcome)
        return settled + len(claims)

    async def _claim(self) -> tuple[list[Claim], int]:
        """Claims to send, and how many due deliveries were settled without a send."""
        settings = self._runtime.settings
        max_age = timedelta(hours=settings.alert_max_age_hours)
        now = self._runtime.clock.now()
        async with self._runtime.unit_of_work() as session:
            due = await repository.due_deliveries(session, now, BATCH_SIZE)
            if not due:
                return [], 0
            channels = await repository.channels_for_update(session, {d.channel_id for d in due})
            alerts = await repository.alerts_by_id(session, {d.alert_id for d in due})
            claims: list[Claim] = []
            settled = 0
            for channel_id, deliveries in _grouped(due).items():
                found = channels.get(channel_id)
                if gone := _gone(found):
                    for delivery in deliveries:
                        _finish(delivery, "cancelled", gone)
                    settled += len(deliveries)
                    continue
                assert found is not None
                channel = found[0]
                live: Due = []
                for delivery in deliveries:
                    deadline = alerts[delivery.alert_id].created_at + max_age
                    if now >= deadline:
                        _finish(delivery, "expired", "not sent within the alert's max age")
                        settled += 1
                    else:
                        live.append((delivery, deadline))
                if not live:
                    continue
                send, wait = _through_breaker(channel, live, now)
                for delivery, deadline in wait:
                    assert channel.open_until is not None
                    _put_off(delivery, channel.open_until, deadline)
                settled += len(wait)
                for delivery, deadline in send:
                    delivery.claimed_until = now + timedelta(seconds=LEASE_SECONDS)
                    claims.append(_claim_of(delivery, channel, alerts[delivery.alert_id], deadline))
            await session.flush()
        return claims, settled

    async def _work_channel(self, claims: list[Claim]) -> None:
        for index, claim in enumerate(claims):
            rest = claims[index + 1 :]
            if self._stopping:
                await self._give_back(claims[index:], None)
                return
            try:
                started = self._runtime.clock.now()
                result = await self._attempt(claim, started)
                open_until = await self._record(claim, started, result)
            except (SQLAlchemyError, OSError):
                # The lease runs out and the delivery is tried again; nothing is lost.
                log.warning(
                    "recording an alert delivery failed",
                    extra={"delivery_id": claim.delivery_id},
                    exc_info=True,
                )
                return
            if open_until is not None and rest:
                await self._give_back(rest, open_until)
                return

    async def _attempt(self, claim: Claim, now: datetime) -> SendResult:
        return await self._get_sender().send_sealed(
            self._channel_box(),
            org_id=claim.org_id,
            channel_id=claim.channel_id,
            kind=claim.kind,
            sealed=claim.config_sealed,
            alert=claim.alert,
            delivery_id=claim.delivery_id,
            now=now,
        )

    async def _record(self, claim: Claim, started: datetime, result: SendResult) -> datetime | None:
        """Write the attempt and the delivery's new state; returns until when the channel's
        breaker is open after it (None: closed)."""
        done = self._runtime.clock.now()
        async with self._runtime.unit_of_work() as session:
            delivery = await repository.delivery_for_update(session, claim.delivery_id)
            channel = await repository.channel_for_update(session, claim.channel_id)
            if delivery is None or channel is None:
                return None
            outcome = self._outcome(delivery, claim, result, done)
            _count(channel, result, done, self._runtime.settings.alert_retry_max_seconds)
            await repository.add_attempt(
                session,
                AlertAttempt(
                    id=new_id("att"),
                    delivery_id=delivery.id,
                    attempt=delivery.attempts,
                    started_at=started,
                    duration_ms=result.duration_ms,
                    status_code=result.status_code,
                    error=result.error,
                    outcome=outcome,
                ),
            )
            if outcome != "delivered":
                log.info(
                    "alert delivery attempt did not deliver",
                    extra={
                        "delivery_id": delivery.id,
                        "channel_id": channel.id,
                        "outcome": outcome,
                        "status_code": result.status_code,
                        "error": result.error,
                    },
                )
            if channel.open_until is not None and channel.open_until > done:
                return channel.open_until
            return None

    def _outcome(
        self, delivery: AlertDelivery, claim: Claim, result: SendResult, done: datetime
    ) -> str:
        delivery.attempts += 1
        delivery.last_status_code = result.status_code
        delivery.last_error = result.error
        delivery.claimed_until = None
        if result.verdict == "delivered":
            outcome = "delivered"
            delivery.delivered_at = done
        elif result.verdict == "failed":
            outcome = "failed"
        else:
            cap = self._runtime.settings.alert_retry_max_seconds
            delay = retry_delay(delivery.attempts, cap, self._rng, result.retry_after)
            following = done + timedelta(seconds=delay)
            if following > claim.deadline:
                outcome = "expired"
            else:
                outcome = "retry"
                delivery.next_attempt_at = following
        # A delivery cancelled meanwhile (its channel deleted) keeps that status; the attempt
        # made is logged all the same.
        if delivery.status == "pending" and outcome != "retry":
            delivery.status = outcome
        return outcome

    async def _give_back(self, claims: Iterable[Claim], until: datetime | None) -> None:
        """Release claims not sent: at once (a closing worker), or to wait for the channel's
        breaker (`until`), expiring those whose alert would be too old by then."""
        by_id = {claim.delivery_id: claim for claim in claims}
        async with self._runtime.unit_of_work() as session:
            for delivery in await repository.deliveries_for_update(session, by_id):
                if delivery.status != "pending":
                    continue
                if until is None:
                    delivery.claimed_until = None
                else:
                    _put_off(delivery, until, by_id[delivery.id].deadline)
            await session.flush()

    def _channel_box(self) -> SecretBox:
        if self._box is None:
            self._box = channel_box(self._runtime.settings.secret)
        return self._box

    def _get_sender(self) -> AlertSender:
        if self._sender is None:
            self._sender = AlertSender(
                self._runtime.settings.outbound_allowed, resolve=self._resolve
            )
        return self._sender


# --- the rules of one round, on rows locked by the claim ------------------------------------


def _grouped(deliveries: list[AlertDelivery]) -> dict[str, list[AlertDelivery]]:
    groups: dict[str, list[AlertDelivery]] = {}
    for delivery in deliveries:
        groups.setdefault(delivery.channel_id, []).append(delivery)
    return groups


def _gone(found: tuple[AlertChannel, bool] | None) -> str | None:
    """Why the channel's deliveries are cancelled, or None when it is live."""
    if found is None:
        return "the channel no longer exists"
    channel, org_deleted = found
    if org_deleted:
        return "the organization was deleted"
    if channel.deleted_at is not None:
        return "the channel was deleted"
    if not channel.enabled:
        return "the channel was disabled"
    return None


Due = list[tuple[AlertDelivery, datetime]]


def _through_breaker(channel: AlertChannel, due: Due, now: datetime) -> tuple[Due, Due]:
    """(to send now, to wait for the breaker). Closed: up to PER_CHANNEL_PER_ROUND go, the rest
    stay due for the next round. Open: all wait. Half-open: the first goes as the probe, and
    the breaker is shut for everyone else while it is out."""
    if channel.open_until is None:
        return due[:PER_CHANNEL_PER_ROUND], []
    if channel.open_until > now:
        return [], due
    channel.open_until = now + timedelta(seconds=PROBE_SECONDS)
    return due[:1], due[1:]


def _put_off(delivery: AlertDelivery, until: datetime, deadline: datetime) -> None:
    delivery.claimed_until = None
    if until > deadline:
        _finish(
            delivery,
            "expired",
            "the channel's circuit breaker stayed open past the alert's max age",
        )
    else:
        delivery.next_attempt_at = max(delivery.next_attempt_at, until)


def _finish(delivery: AlertDelivery, status: str, reason: str) -> None:
    delivery.status = status
    delivery.claimed_until = None
    delivery.last_error = cut(reason)


def _count(channel: AlertChannel, result: SendResult, done: datetime, cap: float) -> None:
    if result.delivered:
        channel.failures = 0
        channel.open_until = None
        return
    channel.failures += 1
    if channel.failures >= BREAKER_THRESHOLD:
        channel.open_until = done + timedelta(seconds=breaker_pause(channel.failures, cap))


def _claim_of(
    delivery: AlertDelivery, channel: AlertChannel, alert: Alert, deadline: datetime
) -> Claim:
    return Claim(
        delivery_id=delivery.id,
        org_id=delivery.org_id,
        channel_id=channel.id,
        kind=channel.kind,
        config_sealed=channel.config_sealed,
        alert=alert_payload(alert),
        deadline=deadline,
    )
