"""The alert mail settings' values: the SMTP server URL (SLUICEGATE_SMTP_URL) and the sender
(SLUICEGATE_SMTP_FROM), parsed and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import ip_address
from urllib.parse import parse_qsl, unquote, urlsplit

from sluicegate.core.mail_addresses import mail_address

# smtps:// is TLS from the first byte (RFC 8314), smtp:// submission with STARTTLS; their ports.
SMTP_PORTS = {"smtps": 465, "smtp": 587}
SMTP_URL_EXAMPLE = "smtps://user:password@mail.example.com:465"
# `Name <address>` or a bare address; the name without the characters that would need quoting.
_FROM = re.compile(
    r"\s*(?:(?P<name>[^<>\"\\,;:@\x00-\x1f\x7f]*?)\s*<(?P<angle>[^<>]*)>|(?P<bare>[^<>\s]+))\s*"
)
MAX_FROM_NAME_LENGTH = 100
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?:{_HOST_LABEL}\.)*{_HOST_LABEL}\.?")


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """SLUICEGATE_SMTP_URL and SLUICEGATE_SMTP_FROM, parsed. The password never shows in a repr
    (nor in a log line made of one)."""

    host: str
    port: int
    implicit_tls: bool  # smtps://: TLS from the first byte
    starttls: bool  # smtp://: STARTTLS required before anything is sent (unless starttls=false)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sender_name: str = ""
    sender_address: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_smtp_url(value: str) -> SmtpServer:
    """smtps://user:password@host:465 or smtp://user:password@host:587[?starttls=false]; a
    ValueError that names what is wrong and never repeats the password."""
    scheme, separator, _rest = value.partition("://")
    if not separator or scheme.lower() not in SMTP_PORTS:
        raise ValueError(
            "must start with smtps:// (TLS from the first byte, usually port 465) or smtp:// "
            f"(STARTTLS, usually port 587), e.g. {SMTP_URL_EXAMPLE}"
        )
    scheme = scheme.lower()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"names no host, e.g. {SMTP_URL_EXAMPLE}")
    if not _is_address(host) and _HOST_NAME.fullmatch(host) is None:
        raise ValueError("has a host that is neither a DNS name nor an IP address")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"must not have a path or fragment, e.g. {SMTP_URL_EXAMPLE}")
    starttls = scheme == "smtp"
    for name, setting in parse_qsl(parts.query, keep_blank_values=True):
        if name != "starttls":
            raise ValueError(f"takes only the option ?starttls=false, not {name!r}")
        if scheme == "smtps":
            raise ValueError("?starttls is for smtp:// only; smtps:// is TLS from the first byte")
        if setting.lower() not in ("true", "false"):
            raise ValueError("?starttls must be true or false")
        starttls = setting.lower() == "true"
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is None and password is not None:
        raise ValueError("has a password but no user name (smtp://user:password@host)")
    if username is not None and not password:
        raise ValueError("names a user but no password (smtp://user:password@host)")
    if username is not None and scheme == "smtp" and not starttls and not _is_loopback(host):
        raise ValueError(
            f"with ?starttls=false would send the password unencrypted to {host}; a relay "
            "that takes a password without TLS must be on loopback (use STARTTLS or smtps://)"
        )
    return SmtpServer(
        host=host,
        port=port or SMTP_PORTS[scheme],
        implicit_tls=scheme == "smtps",
        starttls=starttls,
        username=username,
        password=password,
    )


def parse_sender(value: str) -> tuple[str, str]:
    """SLUICEGATE_SMTP_FROM as (display name, address); ValueError saying what is wrong."""
    found = _FROM.fullmatch(value)
    if found is None:
        raise ValueError(
            "must be an address, alerts@example.com, or a name and an address, "
            "Sluicegate <alerts@example.com> (the name without quotes, commas or control "
            "characters)"
        )
    name = " ".join((found.group("name") or "").split())
    if len(name) > MAX_FROM_NAME_LENGTH:
        raise ValueError(f"has a name longer than {MAX_FROM_NAME_LENGTH} characters")
    address = found.group("angle") if found.group("angle") is not None else found.group("bare")
    try:
        return name, mail_address(address)
    except ValueError as exc:
        raise ValueError(f"has an address that {exc}") from None


def _is_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
