"""The alert delivery worker: the consumer of the outbox (alerts/models.py AlertDelivery). The
rules a round applies to the rows it claimed are in alerts/delivery_rules.py.

A round claims the due deliveries, sends them, and records each attempt:
- claim: pending rows due now whose lease ran out, oldest first, locked with SKIP LOCKED on
  Postgres; each gets a lease (`claimed_until`) and the claim commits BEFORE anything is sent.
  So any number of workers, in `serve` and `sluicegate worker` processes, never send one
  delivery at the same time, and a worker killed mid-send leaves its rows to whoever finds
  them after the lease (the receiver sees the same Idempotency-Key again and may drop it);
- send (alerts/sender.py): channels side by side, the deliveries of one channel one after the
  other, so its circuit breaker sees every failure before the next attempt; mail to people
  (alerts/mailer.py) side by side too, a few per lane;
- record: the attempt in the delivery log and the delivery's new state: delivered; retried
  after an exponential backoff with full jitter; failed for good (another 4xx, an SMTP 5xx, a
  refused URL); or expired once the next attempt would come after the alert's max age.

A person's delivery (the key owner, the scope's admins, users a rule names) is mailed to the
user's address as it is at the attempt. It is cancelled, with the reason in its `last_error`,
when no SMTP server is configured (SLUICEGATE_SMTP_URL), when the user is frozen or no longer
an active member of the alert's org, or when the org was deleted. A person has no channel and
so no circuit breaker; backoff, max age and the attempts log are the same.

Each channel has a circuit breaker, kept in its row so every worker shares it: attempts that
did not deliver are counted, a delivery resets the count, and at BREAKER_THRESHOLD in a row the
breaker opens for 30 s, doubling with each failed probe up to 10 minutes, and never longer
than SLUICEGATE_ALERT_RETRY_MAX_SECONDS (the longest pause between two attempts of a delivery,
which the breaker must not stretch). While open, the channel's due deliveries wait for it (no
attempt is counted); once it is due one delivery goes as the probe (half-open) and the others
wait for its outcome. Deliveries of a disabled or deleted channel, of an email channel while no
SMTP server is configured, or of a deleted org, are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from sluicegate.alerts import delivery_rules as rules
from sluicegate.alerts import log_repository as repository
from sluicegate.alerts.attempts import SEND_TIMEOUT_SECONDS, SendResult
from sluicegate.alerts.channel_config import channel_box
from sluicegate.alerts.mailer import AlertMailer
from sluicegate.alerts.models import AlertAttempt, AlertDelivery
from sluicegate.alerts.sender import AlertSender
from sluicegate.core.egress import Resolver, system_resolver
from sluicegate.core.ids import new_id
from sluicegate.core.logs import log_failure
from sluicegate.core.sealing import SecretBox
from sluicegate.resources import Resources

# An idle worker looks for due deliveries this often (wake() skips the pause).
POLL_SECONDS = 0.5
# Deliveries claimed per round.
BATCH_SIZE = 20
# A claimed delivery is left alone this long: longer than a round can take, so only a worker
# that died (or hung) loses its claim, never a slow one.
LEASE_SECONDS = 60.0
# Backoff of retries: the n-th retry waits a random time in [b/2, b], b = base * 2^(n-1),
# b capped by SLUICEGATE_ALERT_RETRY_MAX_SECONDS. Jitter keeps retries of many deliveries that
# failed together from arriving together.
RETRY_BASE_SECONDS = 1.0
# After a failed round (database down), wait this long before the next.
RETRY_ROUND_SECONDS = 1.0
# A closing worker waits this long for its round in progress: about one send.
STOP_TIMEOUT_SECONDS = SEND_TIMEOUT_SECONDS + 2.0

log = logging.getLogger("sluicegate.alerts")


def retry_delay(attempt: int, cap: float, rng: random.Random, retry_after: float | None) -> float:
    """Seconds before the next attempt after failed attempt number `attempt` (1-based)."""
    ceiling = min(cap, RETRY_BASE_SECONDS * 2.0 ** min(attempt - 1, 32))
    delay = rng.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


class AlertDeliveryWorker:
    def __init__(
        self,
        runtime: Resources,
        *,
        resolve: Resolver = system_resolver,
        rng: random.Random | None = None,
    ) -> None:
        self._runtime = runtime
        self._resolve = resolve
        self._rng = rng or random.SystemRandom()
        self._box: SecretBox | None = None
        self._sender: AlertSender | None = None
        self._mail = runtime.settings.smtp is not None
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
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "alert delivery round failed; retrying", exc)
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
        by_channel: dict[str, list[rules.Claim]] = {}
        people: list[rules.Claim] = []
        for claim in claims:
            if claim.channel_id is None:
                people.append(claim)
            else:
                by_channel.setdefault(claim.channel_id, []).append(claim)
        lanes = list(by_channel.values()) + [
            people[start : start + rules.PER_CHANNEL_PER_ROUND]
            for start in range(0, len(people), rules.PER_CHANNEL_PER_ROUND)
        ]
        outcomes = await asyncio.gather(
            *(self._work_channel(lane) for lane in lanes), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                # Its claims stay leased and are tried again once the lease runs out.
                log.error("alert delivery failed unexpectedly", exc_info=outcome)
        return settled + len(claims)

    async def _claim(self) -> tuple[list[rules.Claim], int]:
        """Claims to send, and how many due deliveries were settled without a send."""
        settings = self._runtime.settings
        max_age = timedelta(hours=settings.alert_max_age_hours)
        now = self._runtime.clock.now()
        async with self._runtime.unit_of_work() as session:
            due = await repository.due_deliveries(session, now, BATCH_SIZE)
            if not due:
                return [], 0
            to_people = [d for d in due if d.channel_id is None]
            to_channels = [d for d in due if d.channel_id is not None]
            channels = await repository.channels_for_update(
                session, {d.channel_id for d in to_channels if d.channel_id is not None}
            )
            alerts = await repository.alerts_by_id(session, {d.alert_id for d in due})
            recipients = await repository.recipients(
                session,
                {(d.org_id, d.recipient_user_id) for d in to_people if d.recipient_user_id},
            )
            claims, settled = rules.claim_people(
                to_people,
                recipients,
                alerts,
                now=now,
                lease_until=now + timedelta(seconds=LEASE_SECONDS),
                max_age=max_age,
                mail=self._mail,
            )
            for channel_id, deliveries in rules.grouped_by_channel(to_channels).items():
                found = channels.get(channel_id)
                if gone := rules.channel_gone(found, self._mail):
                    for delivery in deliveries:
                        rules.finish(delivery, "cancelled", gone)
                    settled += len(deliveries)
                    continue
                assert found is not None
                channel = found[0]
                live: rules.Due = []
                for delivery in deliveries:
                    deadline = alerts[delivery.alert_id].created_at + max_age
                    if now >= deadline:
                        rules.finish(delivery, "expired", "not sent within the alert's max age")
                        settled += 1
                    else:
                        live.append((delivery, deadline))
                if not live:
                    continue
                send, wait = rules.through_breaker(channel, live, now)
                for delivery, deadline in wait:
                    assert channel.open_until is not None
                    rules.put_off(delivery, channel.open_until, deadline)
                settled += len(wait)
                for delivery, deadline in send:
                    delivery.claimed_until = now + timedelta(seconds=LEASE_SECONDS)
                    claims.append(
                        rules.channel_claim(delivery, channel, alerts[delivery.alert_id], deadline)
                    )
            await session.flush()
        return claims, settled

    async def _work_channel(self, claims: list[rules.Claim]) -> None:
        for index, claim in enumerate(claims):
            rest = claims[index + 1 :]
            if self._stopping:
                await self._give_back(claims[index:], None)
                return
            try:
                started = self._runtime.clock.now()
                result = await self._attempt(claim, started)
                open_until = await self._record(claim, started, result)
            except (SQLAlchemyError, OSError) as exc:
                # The lease runs out and the delivery is tried again; nothing is lost.
                log_failure(
                    log, "recording an alert delivery failed", exc, delivery_id=claim.delivery_id
                )
                return
            if open_until is not None and rest:
                await self._give_back(rest, open_until)
                return

    async def _attempt(self, claim: rules.Claim, now: datetime) -> SendResult:
        if claim.address is not None:
            return await self._get_sender().mail(
                [claim.address], claim.alert, delivery_id=claim.delivery_id, now=now
            )
        assert claim.channel_id is not None
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

    async def _record(
        self, claim: rules.Claim, started: datetime, result: SendResult
    ) -> datetime | None:
        """Write the attempt and the delivery's new state; returns until when the channel's
        breaker is open after it (None: closed)."""
        done = self._runtime.clock.now()
        async with self._runtime.unit_of_work() as session:
            delivery = await repository.delivery_for_update(session, claim.delivery_id)
            channel = (
                None
                if claim.channel_id is None
                else await repository.channel_for_update(session, claim.channel_id)
            )
            if delivery is None or (claim.channel_id is not None and channel is None):
                return None
            outcome = self._outcome(delivery, claim, result, done)
            if channel is not None:
                rules.count_attempt(
                    channel, result, done, self._runtime.settings.alert_retry_max_seconds
                )
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
                        "channel_id": delivery.channel_id,
                        "recipient_user_id": delivery.recipient_user_id,
                        "outcome": outcome,
                        "status_code": result.status_code,
                        "error": result.error,
                    },
                )
            if channel is not None and channel.open_until is not None and channel.open_until > done:
                return channel.open_until
            return None

    def _outcome(
        self, delivery: AlertDelivery, claim: rules.Claim, result: SendResult, done: datetime
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

    async def _give_back(self, claims: Iterable[rules.Claim], until: datetime | None) -> None:
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
                    rules.put_off(delivery, until, by_id[delivery.id].deadline)
            await session.flush()

    def _channel_box(self) -> SecretBox:
        if self._box is None:
            self._box = channel_box(self._runtime.settings.secret)
        return self._box

    def _get_sender(self) -> AlertSender:
        if self._sender is None:
            settings = self._runtime.settings
            self._sender = AlertSender(
                settings.outbound_allowed,
                resolve=self._resolve,
                mailer=AlertMailer.configured(settings),
            )
        return self._sender
