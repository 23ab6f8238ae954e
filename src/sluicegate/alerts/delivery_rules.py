"""The rules of one delivery round, on the rows its claim has locked (alerts/delivery.py runs
them inside its transactions): which deliveries go now, which wait for their channel's circuit
breaker, which are cancelled and why, or expired; what a claim carries to the sender; and the
breaker's count after an attempt. Functions of rows and time only, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sluicegate.alerts import payloads
from sluicegate.alerts.attempts import SEND_TIMEOUT_SECONDS, SendResult, cut
from sluicegate.alerts.log_repository import Recipient
from sluicegate.alerts.mailer import NO_SMTP
from sluicegate.alerts.models import Alert, AlertChannel, AlertDelivery

# Of one channel at most this many are sent per round, one after the other: a round then takes
# at most this many send timeouts (channels go side by side), well inside the lease. Mail to
# people goes in lanes of as many, side by side, for the same bound.
PER_CHANNEL_PER_ROUND = 3
# The circuit breaker: opens after this many attempts in a row that did not deliver...
BREAKER_THRESHOLD = 5
# ...for 30 s, doubled at each failed probe, at most 10 minutes (and at most the retry cap).
BREAKER_BASE_SECONDS = 30.0
BREAKER_MAX_SECONDS = 600.0
# While a probe is out the breaker stays shut this long for everyone else: the probe's send
# timeout and a margin; a worker that dies with the probe lets the next one probe after it.
PROBE_SECONDS = SEND_TIMEOUT_SECONDS + 5.0


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker holds the lease of, with what sending it needs: a channel's kind
    and sealed config, or a person's address."""

    delivery_id: str
    org_id: str
    alert: payloads.Alert
    deadline: datetime  # the alert's created_at + max age: no attempt after it
    channel_id: str | None = None
    kind: str = "email"
    config_sealed: str = ""
    recipient_user_id: str | None = None
    address: str | None = None


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


def grouped_by_channel(deliveries: list[AlertDelivery]) -> dict[str, list[AlertDelivery]]:
    groups: dict[str, list[AlertDelivery]] = {}
    for delivery in deliveries:
        if delivery.channel_id is not None:
            groups.setdefault(delivery.channel_id, []).append(delivery)
    return groups


def channel_gone(found: tuple[AlertChannel, bool] | None, mail: bool) -> str | None:
    """Why the channel's deliveries are cancelled, or None when it is live. `mail`: an SMTP
    server is configured."""
    if found is None:
        return "the channel no longer exists"
    channel, org_deleted = found
    if org_deleted:
        return "the organization was deleted"
    if channel.deleted_at is not None:
        return "the channel was deleted"
    if not channel.enabled:
        return "the channel was disabled"
    if channel.kind == "email" and not mail:
        return NO_SMTP
    return None


def person_unreachable(person: Recipient | None, mail: bool) -> str | None:
    """Why a person's delivery is cancelled, or None when they are to be mailed."""
    if not mail:
        return NO_SMTP
    if person is None:
        return "the user no longer exists"
    if person.org_deleted:
        return "the organization was deleted"
    if person.frozen:
        return "the user's account is frozen"
    if not person.member:
        return "the user is no longer an active member of the organization"
    return None


Due = list[tuple[AlertDelivery, datetime]]


def through_breaker(channel: AlertChannel, due: Due, now: datetime) -> tuple[Due, Due]:
    """(to send now, to wait for the breaker). Closed: up to PER_CHANNEL_PER_ROUND go, the rest
    stay due for the next round. Open: all wait. Half-open: the first goes as the probe, and
    the breaker is shut for everyone else while it is out."""
    if channel.open_until is None:
        return due[:PER_CHANNEL_PER_ROUND], []
    if channel.open_until > now:
        return [], due
    channel.open_until = now + timedelta(seconds=PROBE_SECONDS)
    return due[:1], due[1:]


def put_off(delivery: AlertDelivery, until: datetime, deadline: datetime) -> None:
    delivery.claimed_until = None
    if until > deadline:
        finish(
            delivery,
            "expired",
            "the channel's circuit breaker stayed open past the alert's max age",
        )
    else:
        delivery.next_attempt_at = max(delivery.next_attempt_at, until)


def finish(delivery: AlertDelivery, status: str, reason: str) -> None:
    delivery.status = status
    delivery.claimed_until = None
    delivery.last_error = cut(reason)


def count_attempt(channel: AlertChannel, result: SendResult, done: datetime, cap: float) -> None:
    if result.delivered:
        channel.failures = 0
        channel.open_until = None
        return
    channel.failures += 1
    if channel.failures >= BREAKER_THRESHOLD:
        channel.open_until = done + timedelta(seconds=breaker_pause(channel.failures, cap))


def channel_claim(
    delivery: AlertDelivery, channel: AlertChannel, alert: Alert, deadline: datetime
) -> Claim:
    return Claim(
        delivery_id=delivery.id,
        org_id=delivery.org_id,
        alert=alert_payload(alert),
        deadline=deadline,
        channel_id=channel.id,
        kind=channel.kind,
        config_sealed=channel.config_sealed,
    )


def person_claim(
    delivery: AlertDelivery, person: Recipient, alert: Alert, deadline: datetime
) -> Claim:
    return Claim(
        delivery_id=delivery.id,
        org_id=delivery.org_id,
        alert=alert_payload(alert),
        deadline=deadline,
        recipient_user_id=delivery.recipient_user_id,
        address=person.email,
    )


def claim_people(
    deliveries: list[AlertDelivery],
    recipients: dict[tuple[str, str], Recipient],
    alerts: dict[str, Alert],
    *,
    now: datetime,
    lease_until: datetime,
    max_age: timedelta,
    mail: bool,
) -> tuple[list[Claim], int]:
    """Due deliveries to people: the claims to send (their rows leased until `lease_until`),
    and how many were settled without a send (cancelled, or expired). `mail`: an SMTP server
    is configured."""
    claims: list[Claim] = []
    settled = 0
    for delivery in deliveries:
        person = recipients.get((delivery.org_id, delivery.recipient_user_id or ""))
        alert = alerts[delivery.alert_id]
        deadline = alert.created_at + max_age
        if reason := person_unreachable(person, mail):
            finish(delivery, "cancelled", reason)
            settled += 1
        elif now >= deadline:
            finish(delivery, "expired", "not sent within the alert's max age")
            settled += 1
        else:
            assert person is not None
            delivery.claimed_until = lease_until
            claims.append(person_claim(delivery, person, alert, deadline))
    return claims, settled
