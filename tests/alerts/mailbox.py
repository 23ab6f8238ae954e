"""An SMTP server over loopback for the mail tests (aiosmtpd's Controller, in its own thread):
it records every message it is given with its envelope, and answers DATA with the replies a
test queues (250 otherwise). STARTTLS tests take their certificate from
tests/support.py `tls_pair`."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import free_port

OK = "250 2.0.0 OK"


@dataclass(frozen=True)
class Mail:
    """One DATA the server received, whatever it answered."""

    sender: str
    recipients: list[str]
    raw: bytes
    reply: str

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")


class Mailbox:
    """The handler: every DATA in `received`, the replies to give in `replies`."""

    def __init__(self) -> None:
        self.received: list[Mail] = []
        self._replies: deque[str] = deque()
        self.refused: dict[str, str] = {}  # address -> the reply to its RCPT
        self.logins: list[tuple[str, str]] = []

    @property
    def delivered(self) -> list[Mail]:
        return [mail for mail in self.received if mail.accepted]

    def reply(self, *replies: str) -> None:
        """Answer the next DATA commands so, in order (e.g. "451 4.3.0 Try again later")."""
        self._replies.extend(replies)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refused:
            return self.refused[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._replies.popleft() if self._replies else OK
        self.received.append(
            Mail(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content), reply)
        )
        return reply


class Passwords:
    """An aiosmtpd authenticator that takes one user and password and records every try."""

    def __init__(self, mailbox: Mailbox, user: str, password: str) -> None:
        self._mailbox = mailbox
        self._user, self._password = user, password

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        self._mailbox.logins.append((user, password))
        # handled=False: aiosmtpd answers a refusal with its 535 itself.
        return AuthResult(success=(user, password) == (self._user, self._password), handled=False)


@contextlib.contextmanager
def running_mailbox(**smtp: Any) -> Iterator[tuple[Mailbox, int]]:
    """A mailbox listening on a free port of 127.0.0.1; `smtp` goes to aiosmtpd's SMTP (e.g.
    tls_context, require_starttls, authenticator)."""
    mailbox = Mailbox()
    if "authenticator" in smtp:
        smtp["authenticator"] = Passwords(mailbox, *smtp["authenticator"])
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()
