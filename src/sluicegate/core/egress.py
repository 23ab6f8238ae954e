"""Outbound URLs that org admins set (alert webhooks, Slack and Discord channels) are checked
against server-side request forgery before they are stored and again before each delivery.

A URL passes when it is http(s) and every address its host resolves to is a public unicast
address, or lies in a network the operator allows (e.g. a company relay on 10.0.0.0/8, or
loopback in tests). Every address must pass, not just
one: a name that resolves to a public and a private address is refused, since the connection
may take either. The check returns the addresses it approved, so a delivery connects to one of
them instead of resolving again (a name re-pointed to a private address between the check and
the connection, DNS rebinding, gains nothing).

Operator configuration (SLUICEGATE_PROVIDERS) is not checked: loopback and private upstreams
are normal there.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
# (host, port) -> the addresses it resolves to; loop.getaddrinfo by default, replaceable in tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class EgressRefused(ValueError):
    """The URL may not be called; the message says why, in words an admin can act on."""


@dataclass(frozen=True, slots=True)
class CheckedURL:
    url: str
    host: str
    port: int
    addresses: tuple[str, ...]  # the approved addresses of host, in resolution order


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """Public unicast, or inside a network the operator allows. An IPv4 address written as IPv6
    (::ffff:127.0.0.1) is judged as the IPv4 address it is."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == network.version and address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def check_url(
    url: str, allowed: Sequence[IPNetwork], *, resolve: Resolver = system_resolver
) -> CheckedURL:
    """The URL with its approved addresses, or EgressRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EgressRefused("is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefused("must be an http:// or https:// URL with a host")
    host = parts.hostname
    try:
        literal: IPAddress | None = ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [str(literal)]
    else:
        try:
            found = list(await resolve(host, port))
        except (OSError, UnicodeError):
            found = []
        if not found:
            raise EgressRefused(f"its host {host!r} cannot be resolved")
    for text in found:
        address = ip_address(text.split("%", 1)[0])  # an IPv6 zone ("fe80::1%eth0") is dropped
        if not address_allowed(address, allowed):
            shown = host if literal is not None else f"{host!r} ({address})"
            raise EgressRefused(
                f"points to {shown}, a private, loopback, link-local or otherwise non-public "
                "address, which is not allowed here"
            )
    return CheckedURL(url, host, port, tuple(dict.fromkeys(found)))


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """'10.0.0.0/8, 192.168.1.7, ::1' as networks; ValueError naming the entry that is not one."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(networks)
