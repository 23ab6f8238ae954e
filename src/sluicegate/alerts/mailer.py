"""One SMTP attempt of one alert to one or more addresses (an email channel, or a person): the
message, the session with the operator's server (SLUICEGATE_SMTP_URL) and the verdict.

- TLS: smtps:// from the first byte; smtp:// upgrades with STARTTLS before anything else is
  said, and a server that does not offer it gets nothing (unless the operator set
  ?starttls=false for a relay they trust). Certificates are checked against the URL's host.
- The message: text/plain, subject `[Sluicegate] <title>` on one line, and a Message-ID made of
  the delivery's id, the same on every attempt (the mail counterpart of Idempotency-Key), with
  the X-Sluicegate-Delivery and X-Sluicegate-Event headers.
- The verdict: the server accepted it (for at least one address): delivered; a 4xx reply, a
  connection that failed or an answer that did not come in time: retry; a 5xx reply (550
  mailbox unavailable, 535 bad credentials, ...): failed for good. The attempt's status code
  is the SMTP reply code.

The addresses and the password never appear in a verdict's text: the delivery log is read by
viewers, and a channel's addresses are as private as a webhook's URL.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import aiosmtplib

from sluicegate.alerts import payloads
from sluicegate.alerts.attempts import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SEND_TIMEOUT_SECONDS,
    SendResult,
    failed,
    result,
)
from sluicegate.core.mail_addresses import mail_address
from sluicegate.settings import Settings
from sluicegate.smtp_url import SmtpServer

NO_SMTP = (
    "no SMTP server is configured (SLUICEGATE_SMTP_URL, with SLUICEGATE_SMTP_FROM), so alerts "
    "are not emailed; the operator sets them to send mail"
)
# The right-hand side of every Message-ID: ids are unique by themselves, the name says whose.
MESSAGE_ID_DOMAIN = "sluicegate"
SMTP_OK = 250
# Replies from 400 to 499 say "later" (RFC 5321 4.2.1); 500 and up, "never".
TRANSIENT = range(400, 500)
HIDDEN = "[hidden]"


def alert_message(
    server: SmtpServer,
    to: Sequence[str],
    alert: payloads.Alert,
    *,
    delivery_id: str,
    now: datetime,
) -> EmailMessage:
    """The mail of one delivery. `to` are checked addresses (core/mail_addresses.py); the
    header values set by org members pass through payloads' one-line rendering, and the email
    package refuses any header value that would still hold a line break."""
    message = EmailMessage()
    message["From"] = Address(server.sender_name, addr_spec=server.sender_address)
    message["To"] = ", ".join(to)
    message["Subject"] = payloads.email_subject(alert)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{delivery_id}@{MESSAGE_ID_DOMAIN}>"
    # RFC 3834: an automatic message, so out-of-office replies are not sent back to it.
    message["Auto-Submitted"] = "auto-generated"
    message[DELIVERY_HEADER] = delivery_id
    message[EVENT_HEADER] = alert.event
    message.set_content(payloads.email_text(alert))
    return message


class AlertMailer:
    """Sends alert mail through the operator's SMTP server, one session per attempt."""

    def __init__(
        self,
        server: SmtpServer,
        *,
        timeout: float = SEND_TIMEOUT_SECONDS,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._server = server
        self._timeout = timeout
        # None: the system's trusted certificates, checked against the host (tests give one
        # that trusts their own).
        self._tls_context = tls_context
        self._local_hostname: str | None = None

    @classmethod
    def configured(
        cls, settings: Settings, *, tls_context: ssl.SSLContext | None = None
    ) -> AlertMailer | None:
        """The mailer of these settings; None when no SMTP server is configured."""
        server = settings.smtp
        return None if server is None else cls(server, tls_context=tls_context)

    async def send(
        self, to: Sequence[str], alert: payloads.Alert, *, delivery_id: str, now: datetime
    ) -> SendResult:
        """One attempt, within the timeout from connecting to the server's last reply. Never
        raises for what the server or the network did: that is the verdict."""
        started = time.perf_counter()
        try:
            addresses = [mail_address(address) for address in to]
        except ValueError:
            return failed(
                "an address of this delivery is not one mail can be sent to (plain ASCII "
                "name@example.com); correct it",
                started,
            )
        if not addresses:
            return failed("this delivery has no address to send to", started)
        message = alert_message(self._server, addresses, alert, delivery_id=delivery_id, now=now)
        client = aiosmtplib.SMTP(
            hostname=self._server.host,
            port=self._server.port,
            use_tls=self._server.implicit_tls,
            start_tls=False,  # upgraded below, refusing a server that does not offer it
            timeout=self._timeout,
            tls_context=self._tls_context,
            local_hostname=await self._hostname(),
        )
        try:
            async with asyncio.timeout(self._timeout):
                verdict = await self._session(client, message, addresses, started)
        except TimeoutError:  # aiosmtplib's own timeouts are TimeoutErrors too
            verdict = result("retry", None, self._late(), started)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            verdict = self._refused(exc.recipients, addresses, started)
        except aiosmtplib.SMTPResponseException as exc:
            verdict = self._reply(exc.code, exc.message, addresses, started)
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
            reason = str(exc.__cause__ or exc) or type(exc).__name__
            verdict = result(
                "retry",
                None,
                f"could not reach the SMTP server {self._server.address}: "
                f"{self._hide(reason, addresses)}",
                started,
            )
        except aiosmtplib.SMTPException as exc:
            verdict = failed(
                f"the SMTP server {self._server.address}: {self._hide(str(exc), addresses)}",
                started,
            )
        finally:
            # No QUIT: once the server has accepted the message, nothing that follows may turn
            # the verdict into a retry (and a second copy); closing ends the session.
            client.close()
        return verdict

    async def _session(
        self,
        client: aiosmtplib.SMTP,
        message: EmailMessage,
        addresses: list[str],
        started: float,
    ) -> SendResult:
        server = self._server
        await client.connect()
        if server.starttls:
            await client.ehlo()
            if not client.supports_extension("starttls"):
                return failed(
                    f"the SMTP server {server.address} does not offer STARTTLS, which "
                    "SLUICEGATE_SMTP_URL (smtp://) requires, so nothing was sent: use smtps:// "
                    "for a server that speaks TLS from the start, or ?starttls=false only for "
                    "a relay you trust (e.g. on loopback)",
                    started,
                )
            await client.starttls()
        if server.username is not None:
            await client.ehlo()
            if not client.supports_extension("auth"):
                return failed(
                    f"the SMTP server {server.address} offers no login (AUTH) on this "
                    "connection; check SLUICEGATE_SMTP_URL (its user and password, and TLS)",
                    started,
                )
            await client.login(server.username, server.password or "")
        errors, _reply = await client.send_message(
            message, sender=server.sender_address, recipients=addresses
        )
        if errors:
            first = next(iter(errors.values()))
            return result(
                "delivered",
                SMTP_OK,
                f"the SMTP server did not accept {len(errors)} of {len(addresses)} addresses: "
                f"SMTP {first.code}: {self._hide(first.message, addresses)}",
                started,
            )
        return result("delivered", SMTP_OK, None, started)

    def _refused(
        self,
        refusals: Sequence[aiosmtplib.SMTPRecipientRefused],
        addresses: list[str],
        started: float,
    ) -> SendResult:
        """Every address refused: later when any refusal was transient, else never."""
        transient = [r for r in refusals if r.code in TRANSIENT]
        chosen = (transient or list(refusals))[0]
        return self._reply(chosen.code, chosen.message, addresses, started)

    def _reply(self, code: int, text: str, addresses: list[str], started: float) -> SendResult:
        error = f"SMTP {code}: {self._hide(text, addresses)}"
        if code == 535:
            error += " (check the user and password in SLUICEGATE_SMTP_URL)"
        if code in TRANSIENT:
            return result("retry", code, error, started)
        if code >= 500:
            return result("failed", code, error, started)
        # A code outside the standard classes: no reason to give up on it.
        return result("retry", code, error, started)

    def _late(self) -> str:
        return f"no answer from the SMTP server {self._server.address} within {self._timeout:g} s"

    def _hide(self, text: str, addresses: Sequence[str]) -> str:
        """The text without the recipients' addresses or the server's password in it."""
        secrets_ = [*addresses]
        if self._server.password:
            secrets_.append(self._server.password)
        lowered = text.lower()
        for secret in secrets_:
            start = lowered.find(secret.lower())
            while start != -1:
                text = text[:start] + HIDDEN + text[start + len(secret) :]
                lowered = text.lower()
                start = lowered.find(secret.lower(), start + len(HIDDEN))
        return text

    async def _hostname(self) -> str:
        """The name this host gives in EHLO, looked up once (a blocking call, in a thread)."""
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname
