"""Which outbound HTTP proxy, if any, an upstream pool reaches its provider through: the
standard HTTPS_PROXY, HTTP_PROXY and NO_PROXY variables, parsed and checked once at start-up.

The conventions are curl's and Python's: an https origin uses HTTPS_PROXY, an http origin
HTTP_PROXY (an origin whose variable is unset is reached directly); NO_PROXY is a comma list of
host names (each matching itself and its subdomains; a leading `.` or `*.` changes nothing),
IP addresses and CIDR ranges (matching addresses written in a provider's URL; names are not
resolved), each optionally with `:port`, or `*` for every host.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import unquote, urlsplit

# The standard variables (never SLUICEGATE_-prefixed), by the setting that holds each.
PROXY_VARIABLES = {"https_proxy": "HTTPS_PROXY", "http_proxy": "HTTP_PROXY", "no_proxy": "NO_PROXY"}
IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network
PROXY_URL_EXAMPLE = "http://proxy.example.com:3128"
# A proxy URL without a port: the http scheme's, as Python's clients and Go assume (curl's 1080
# is a SOCKS habit).
DEFAULT_PROXY_PORT = 80


@dataclass(frozen=True, slots=True)
class OutboundProxy:
    """An http:// proxy, the variable it was set in (for messages) and the Proxy-Authorization
    its URL's user-info makes. Neither the repr nor `url` shows the credentials."""

    host: str
    port: int
    variable: str  # HTTPS_PROXY or HTTP_PROXY
    authorization: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy_url(value: str, variable: str) -> OutboundProxy:
    """`http://[user:password@]host[:port]` (a URL without a scheme is taken as http://); a
    ValueError that says what is wrong and never repeats the URL, which may hold a password."""
    scheme, separator, _rest = value.partition("://")
    if not separator:
        value, scheme = f"http://{value}", "http"
    scheme = scheme.lower()
    if scheme == "https":
        raise ValueError(
            "is an https:// proxy URL (TLS to the proxy), which is not supported; only "
            f"http:// proxy URLs are supported, e.g. {PROXY_URL_EXAMPLE} (the tunnel through "
            "it to an https provider is still TLS from end to end)"
        )
    if scheme != "http":
        raise ValueError(
            f"must be an http:// proxy URL, e.g. {PROXY_URL_EXAMPLE} (only http:// proxy URLs "
            "are supported; SOCKS and other schemes are not)"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 1 to 65535") from None
    if not parts.hostname or any(character.isspace() for character in parts.hostname):
        raise ValueError(f"names no proxy host, e.g. {PROXY_URL_EXAMPLE}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"must be the proxy's address only, without a path, e.g. {PROXY_URL_EXAMPLE}"
        )
    if port == 0:
        raise ValueError("has a port that is not a number from 1 to 65535")
    authorization = None
    if parts.username is not None or parts.password is not None:
        username, password = unquote(parts.username or ""), unquote(parts.password or "")
        if not username:
            raise ValueError("has a password but no user name (http://user:password@host:port)")
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return OutboundProxy(
        host=parts.hostname,
        port=port or DEFAULT_PROXY_PORT,
        variable=variable,
        authorization=authorization,
    )


@dataclass(frozen=True, slots=True)
class _Exclusion:
    """One NO_PROXY entry: a host name (itself and its subdomains) or an address range."""

    name: str | None
    network: IPNetwork | None
    port: int | None

    def matches(self, host: str, address: IPAddress | None, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and address in self.network
        assert self.name is not None
        return host == self.name or host.endswith(f".{self.name}")


@dataclass(frozen=True, slots=True)
class NoProxy:
    """NO_PROXY, parsed: the origins reached directly although a proxy is set."""

    everything: bool = False
    exclusions: tuple[_Exclusion, ...] = ()

    def excludes(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().rstrip(".")
        address: IPAddress | None
        try:
            address = ip_address(host)
        except ValueError:
            address = None
        if address is not None and address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(exclusion.matches(host, address, port) for exclusion in self.exclusions)


def parse_no_proxy(value: str) -> NoProxy:
    """`localhost,.internal.example,10.0.0.0/8,[::1]:8080,*`; a ValueError naming the entry
    that is none of a host name, an address or range, or one of them with a port."""
    exclusions = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry == "*":
            return NoProxy(everything=True)
        exclusions.append(_exclusion(entry))
    return NoProxy(exclusions=tuple(exclusions))


def _exclusion(entry: str) -> _Exclusion:
    host, port = _split_port(entry)
    try:
        network = ip_network(host, strict=False)
    except ValueError:
        if "/" in host or ":" in host:
            raise ValueError(
                f"{entry!r} is neither a host name, an IP address nor a CIDR range "
                "(e.g. localhost, .example.com, 10.0.0.0/8, with an optional :port)"
            ) from None
        name = host.lower().rstrip(".").removeprefix("*").lstrip(".")
        if not name or any(character.isspace() or character in "*@" for character in name):
            raise ValueError(
                f"{entry!r} is not a host name (e.g. localhost or .example.com)"
            ) from None
        return _Exclusion(name=name, network=None, port=port)
    return _Exclusion(name=None, network=network, port=port)


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `[v6]`; a bare IPv6 address or range keeps all its colons."""
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r} is not [IPv6 address] or [IPv6 address]:port")
        return host, _port(entry, rest[1:]) if rest else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(entry, port)
    return entry, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{entry!r} has a port that is not a number from 1 to 65535")
    return int(text)


@dataclass(frozen=True, slots=True)
class OutboundProxies:
    """The process's proxies: one for https origins, one for http origins, and the origins
    neither is used for."""

    https: OutboundProxy | None = None
    http: OutboundProxy | None = None
    no_proxy: NoProxy = NoProxy()

    def for_origin(self, scheme: str, host: str, port: int) -> OutboundProxy | None:
        """The proxy a connection to this origin goes through; None: connect directly."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or self.no_proxy.excludes(host, port):
            return None
        return proxy
