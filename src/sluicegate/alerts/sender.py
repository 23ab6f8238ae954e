"""One attempt of one alert to one channel or person: the body of the channel's kind, the
signature of a webhook, the headers every delivery carries, the egress check before every
attempt, and the verdict (delivered, retry later, failed for good). Email channels and people
go by mail (alerts/mailer.py), when the operator configured an SMTP server. The delivery worker
and a channel's test-send use this same sender, so a test goes exactly the way a real delivery
would.

The connection goes to an address the egress check approved (the host is not resolved again, so
a name re-pointed to a private address after the check, DNS rebinding, gains nothing) while the
Host header and the TLS server name stay those of the URL. Redirects are never followed: the
target of a redirect was not checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from ipaddress import ip_address
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

from sluicegate import __version__
from sluicegate.alerts import payloads
from sluicegate.alerts.attempts import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SEND_TIMEOUT_SECONDS,
    SendResult,
    failed,
    result,
)
from sluicegate.alerts.channel_config import open_config, signing_secrets
from sluicegate.alerts.mailer import NO_SMTP, AlertMailer
from sluicegate.alerts.signing import sign
from sluicegate.core.egress import (
    CheckedURL,
    EgressRefused,
    IPNetwork,
    Resolver,
    check_url,
    system_resolver,
)
from sluicegate.core.sealing import SealBroken, SecretBox

# Of a receiver's answer only the beginning is read: enough for an error message, bounded so a
# hostile receiver cannot make the worker read a gigabyte.
RESPONSE_READ_BYTES = 2048
# Statuses that say "later": timeout, too early, too many requests, and every 5xx.
RETRY_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"Sluicegate-Alerts/{__version__}"

Renderer = Callable[[payloads.Alert], bytes]
RENDERERS: dict[str, Renderer] = {
    "webhook": payloads.webhook_body,
    "slack": payloads.slack_body,
    "discord": payloads.discord_body,
}

log = logging.getLogger("sluicegate.alerts")


class AlertSender:
    """Sends alerts over one HTTP client, and by mail through `mailer` (None: no SMTP server is
    configured). Close it with `aclose()` (or use `async with`)."""

    def __init__(
        self,
        allowed: Sequence[IPNetwork],
        *,
        resolve: Resolver = system_resolver,
        timeout: float = SEND_TIMEOUT_SECONDS,
        mailer: AlertMailer | None = None,
    ) -> None:
        self._allowed = tuple(allowed)
        self._resolve = resolve
        self._timeout = timeout
        self._mailer = mailer
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            # No proxy from the environment: a proxy would resolve the host itself, after our
            # check, and could reach what the check refused.
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            # No connection is reused: connections are keyed by the approved address, and two
            # channels on one address must not share a TLS session made for the other's name.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def __aenter__(self) -> AlertSender:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send_sealed(
        self,
        box: SecretBox,
        *,
        org_id: str,
        channel_id: str,
        kind: str,
        sealed: str,
        alert: payloads.Alert,
        delivery_id: str,
        now: datetime,
    ) -> SendResult:
        """`send` to a channel as stored: its sealed config is opened first."""
        try:
            config = open_config(box, org_id, channel_id, sealed)
        except SealBroken:
            return failed(
                "the channel's configuration does not open with this instance's "
                "SLUICEGATE_SECRET_KEY (changed since it was saved?); save the channel again",
                time.perf_counter(),
            )
        return await self.send(kind, config, alert, delivery_id=delivery_id, now=now)

    async def send(
        self,
        kind: str,
        config: dict[str, Any],
        alert: payloads.Alert,
        *,
        delivery_id: str,
        now: datetime,
    ) -> SendResult:
        """One attempt, within the timeout from resolving the host to reading the answer.
        Never raises for what the receiver or the network did: that is the verdict."""
        if kind == "email":
            addresses = config.get("to")
            if not isinstance(addresses, list) or not addresses:
                return failed(
                    "the channel's configuration has no addresses; set its `to` again",
                    time.perf_counter(),
                )
            return await self.mail(
                [str(a) for a in addresses], alert, delivery_id=delivery_id, now=now
            )
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send(kind, config, alert, delivery_id, now, started)
        except TimeoutError:
            return result("retry", None, f"no answer within {self._timeout:g} s", started)

    async def mail(
        self, to: Sequence[str], alert: payloads.Alert, *, delivery_id: str, now: datetime
    ) -> SendResult:
        """One attempt by mail to these addresses (the mailer keeps its own time limit, which
        ends before its verdict is made, so an accepted message is never retried)."""
        if self._mailer is None:
            return failed(NO_SMTP, time.perf_counter())
        return await self._mailer.send(to, alert, delivery_id=delivery_id, now=now)

    async def _send(
        self,
        kind: str,
        config: dict[str, Any],
        alert: payloads.Alert,
        delivery_id: str,
        now: datetime,
        started: float,
    ) -> SendResult:
        render = RENDERERS.get(kind)
        if render is None:
            return failed(
                f"channels of kind {kind!r} are not known to this instance; it sends webhook, "
                "slack, discord and email channels",
                started,
            )
        url = config.get("url")
        if not isinstance(url, str):
            return failed("the channel's configuration has no URL; set it again", started)
        try:
            checked = await check_url(url, self._allowed, resolve=self._resolve)
        except EgressRefused as exc:
            return failed(
                f"refused before sending: the channel's URL {exc} (an operator may allow a "
                "network with SLUICEGATE_OUTBOUND_ALLOWED_NETWORKS)",
                started,
            )
        body = render(alert)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # The same on every attempt of a delivery: a receiver that answered 2xx to an
            # attempt whose outcome we failed to record drops the repeat.
            "Idempotency-Key": delivery_id,
            DELIVERY_HEADER: delivery_id,
            EVENT_HEADER: alert.event,
        }
        if kind == "webhook":
            secrets_ = signing_secrets(config, now)
            if not secrets_:
                return failed(
                    "the webhook has no current signing secret; rotate the channel's secret",
                    started,
                )
            headers.update(sign(secrets_, int(now.timestamp()), body))
        return await self._post(checked, body, headers, started, now)

    async def _post(
        self,
        checked: CheckedURL,
        body: bytes,
        headers: dict[str, str],
        started: float,
        now: datetime,
    ) -> SendResult:
        parts = urlsplit(checked.url)
        headers["Host"] = parts.netloc.rpartition("@")[2]
        extensions: dict[str, Any] = {}
        if parts.scheme == "https":
            # The certificate is checked against the URL's host, not against the address.
            extensions["sni_hostname"] = checked.host
        request = self._client.build_request(
            "POST", _pinned(parts, checked), content=body, headers=headers, extensions=extensions
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                head = await _read_head(response)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return result("retry", None, f"no answer within {self._timeout:g} s", started)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            return result("retry", None, f"could not reach {checked.host}: {reason}", started)
        return _judge(response, head, started, now)


def _pinned(parts: SplitResult, checked: CheckedURL) -> str:
    """The URL with the approved address in place of the host (userinfo and port kept)."""
    address = checked.addresses[0].split("%", 1)[0]
    if ip_address(address).version == 6:
        address = f"[{address}]"
    userinfo, at, _host = parts.netloc.rpartition("@")
    netloc = f"{userinfo}{at}{address}:{checked.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def _read_head(response: httpx.Response) -> bytes:
    """The first RESPONSE_READ_BYTES of the answer; a body cut short after the status line is
    no reason to doubt the status."""
    head = b""
    # A receiver that closes or stalls mid-body has answered already: keep what arrived.
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in response.aiter_raw():
            head += chunk
            if len(head) >= RESPONSE_READ_BYTES:
                break
    return head[:RESPONSE_READ_BYTES]


def _judge(response: httpx.Response, head: bytes, started: float, now: datetime) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        return result("delivered", status, None, started)
    text = head.decode("utf-8", "replace").strip()
    if 300 <= status < 400:
        location = response.headers.get("location", "")
        return result(
            "failed",
            status,
            f"HTTP {status}: redirected to {location!r}; redirects are not followed, set the "
            "channel's URL to the final address",
            started,
        )
    error = f"HTTP {status}" + (f": {text}" if text else "")
    if status in RETRY_STATUSES or status >= 500:
        retry_after = (
            _retry_after(response.headers.get("retry-after"), now) if status == 429 else None
        )
        return result("retry", status, error, started, retry_after)
    return result("failed", status, error, started)


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())
