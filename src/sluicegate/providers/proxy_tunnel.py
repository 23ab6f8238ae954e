"""A CONNECT tunnel through an outbound HTTP proxy (RFC 9110 §9.3.6): a socket to the proxy on
which the proxy has agreed to relay bytes to the origin. The pool then makes its connection on
that socket, TLS-wrapped for an https origin (so the proxy sees only the origin's name and
encrypted bytes), plain for an http origin (which is tunnelled the same way, for simplicity)."""

from __future__ import annotations

import asyncio
import re
import socket

from sluicegate.providers.outbound_proxy import OutboundProxy

# A CONNECT answer is a status line and a few headers; a proxy sending more is not one.
MAX_ANSWER_HEAD_BYTES = 16 * 1024
RECEIVE_BYTES = 4096
# How much of the proxy's reason phrase a message quotes.
MAX_REASON_CHARACTERS = 80
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?")


class TunnelError(Exception):
    """The proxy could not be reached or would not open the tunnel; the message names the
    proxy by its address (never its credentials) and what it answered."""


class Tunnel:
    """How a pool's connections reach its origin through a proxy; the CONNECT request is made
    once per pool, the same for every connection."""

    __slots__ = ("proxy", "request", "target")

    def __init__(self, proxy: OutboundProxy, host: str, port: int) -> None:
        self.proxy = proxy
        self.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {self.target} HTTP/1.1\r\nHost: {self.target}\r\n"]
        if proxy.authorization is not None:
            lines.append(f"Proxy-Authorization: {proxy.authorization}\r\n")
        lines.append("\r\n")
        self.request = "".join(lines).encode("latin-1")

    def __repr__(self) -> str:
        return f"Tunnel({self.proxy.url} -> {self.target})"

    async def open(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        """A connected socket through which the proxy relays to the origin. The caller bounds
        the time it takes."""
        proxy = self.proxy
        sock = await _connect(loop, proxy)
        try:
            await loop.sock_sendall(sock, self.request)
            status, reason, extra = await _read_answer(loop, sock, proxy)
            if not 200 <= status < 300:
                raise TunnelError(_refusal(proxy, self.target, status, reason))
            if extra:
                # TLS and HTTP/1.1 both wait for the client to speak first: bytes now are not
                # the origin's, and would corrupt its first answer.
                raise TunnelError(f"the outbound proxy {proxy.url} sent data after its answer")
        except BaseException:
            sock.close()
            raise
        return sock


async def _connect(loop: asyncio.AbstractEventLoop, proxy: OutboundProxy) -> socket.socket:
    where = f"the outbound proxy {proxy.url} ({proxy.variable})"
    try:
        addresses = await loop.getaddrinfo(
            proxy.host, proxy.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except OSError as exc:
        raise TunnelError(f"{where} could not be resolved: {exc}") from exc
    failure: OSError | None = None
    for family, kind, protocol, _name, address in addresses:
        sock = socket.socket(family, kind, protocol)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise TunnelError(f"{where} could not be reached: {type(failure).__name__}: {failure}")


async def _read_answer(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: OutboundProxy
) -> tuple[int, str, bytes]:
    """(status, reason phrase, any bytes after the head)."""
    received = b""
    while (end := received.find(b"\r\n\r\n")) < 0:
        if len(received) > MAX_ANSWER_HEAD_BYTES:
            raise TunnelError(
                f"the outbound proxy {proxy.url} answered CONNECT with a head over "
                f"{MAX_ANSWER_HEAD_BYTES} bytes"
            )
        piece = await loop.sock_recv(sock, RECEIVE_BYTES)
        if not piece:
            raise TunnelError(
                f"the outbound proxy {proxy.url} closed the connection before answering CONNECT"
            )
        received += piece
    status_line = received[: received.find(b"\r\n")]
    found = _STATUS_LINE.fullmatch(status_line)
    if found is None:
        raise TunnelError(f"the outbound proxy {proxy.url} answered CONNECT with no HTTP status")
    reason = (found.group(2) or b"").decode("latin-1")
    printable = "".join(character for character in reason if character.isprintable())
    return int(found.group(1)), printable[:MAX_REASON_CHARACTERS], received[end + 4 :]


def _refusal(proxy: OutboundProxy, target: str, status: int, reason: str) -> str:
    message = (
        f"the outbound proxy {proxy.url} ({proxy.variable}) refused the tunnel to {target}: "
        f"{status} {reason}".rstrip()
    )
    if status == 407 and proxy.authorization is None:
        return (
            f"{message}; it asks for credentials: give them in {proxy.variable} as "
            "http://user:password@host:port"
        )
    if status == 407:
        return f"{message}; it did not accept the credentials in {proxy.variable}"
    return message
