"""The HTTP/1.1 client the proxy calls providers with: one keep-alive pool per provider of plain
asyncio connections whose answers are parsed by httptools (the parser uvicorn serves with).

Why not httpx here: on the proxy's hot path httpx with httpcore, h11 and anyio cost about a
third of a proxied request's CPU (profiled with py-spy under bench/compare.py), most of it in
layers a fixed POST to a known origin does not need: URL and header models, the generic pool's
bookkeeping, a byte-at-a-time protocol state machine and anyio's stream wrappers. This client
sends a request as one write, parses the answer in C and hands the body over chunk by chunk.
It does what the proxy needs, no more: POST with a body, HTTP/1.1 with keep-alive, TLS, chunked
and sized bodies, timeouts for connect, write, read and waiting for a pooled connection, flow
control on the read side, one more try when a connection is closed before any answer (a
kept-alive connection the upstream dropped), and an outbound HTTP proxy (a CONNECT tunnel,
providers/proxy_tunnel.py) for origins the operator's HTTPS_PROXY/HTTP_PROXY cover. No
redirects, cookies or content decoding (it asks for `identity`). httpx stays the client of
everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from sluicegate.providers.outbound_proxy import OutboundProxies
from sluicegate.providers.proxy_tunnel import Tunnel, TunnelError

# Above this many unread body bytes of one answer the socket stops being read until the
# consumer (the client of the gateway) catches up: a slow client never makes us buffer a
# whole stream.
READ_HIGH_WATER = 256 * 1024
READ_LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The exchange with the upstream failed (the base of the errors below)."""


class UpstreamTimeout(UpstreamError):
    """Connecting, writing, reading or waiting for a pooled connection took too long."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made (refused, unreachable, DNS, TLS handshake)."""


class UpstreamProtocolError(UpstreamError):
    """The upstream closed the connection mid-answer or sent something that is not HTTP."""


class _StaleConnection(UpstreamProtocolError):
    """The connection was closed before any byte of the answer (a kept-alive connection the
    upstream closed just as it was reused looks exactly like this): sent once more."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    read: float  # for the head, and between two pieces of the body
    write: float
    pool: float  # waiting for a connection when the pool is at its limit


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one exchange at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self.lost = False
        self.active = False  # an exchange is under way
        self.reading_paused = False
        self.writing_paused: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self.received_any = False
        self.waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream asked to switch protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"the upstream sent an invalid answer: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.active and not self.complete:
            if not self.received_any:
                # Most often a kept-alive connection the upstream closed as we reused it.
                self._fail(_StaleConnection("the upstream closed the connection before answering"))
            elif self.head_done and not any(
                name.lower() in (b"content-length", b"transfer-encoding")
                for name, _ in self.raw_headers
            ):
                # An answer with neither a length nor chunks ends with its connection.
                self.complete = True
                self._wake()
            else:
                self._fail(UpstreamProtocolError("the upstream closed the connection mid-answer"))
        if self.writing_paused is not None and not self.writing_paused.done():
            self.writing_paused.set_exception(UpstreamProtocolError("connection closed"))

    def pause_writing(self) -> None:
        self.writing_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writing_paused is not None and not self.writing_paused.done():
            self.writing_paused.set_result(None)
        self.writing_paused = None

    # --- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > READ_HIGH_WATER and not self.reading_paused and self.transport:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # --- the exchange ----------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, seconds: float, what: str) -> None:
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_later(seconds, _expire, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    async def send(self, payload: bytes, timeouts: Timeouts) -> None:
        """Write the request; return once the answer's head has arrived."""
        assert self.transport is not None
        self._reset()
        self.active = True
        if self.lost or self.transport.is_closing():
            raise _StaleConnection("the upstream closed a kept-alive connection")
        self.transport.write(payload)
        if self.writing_paused is not None:
            timer = self.loop.call_later(timeouts.write, _expire, self.writing_paused, "write")
            try:
                await self.writing_paused
            finally:
                timer.cancel()
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeouts.read, "read")
        if self.error is not None and not self.complete:
            raise self.error

    async def next_chunk(self, seconds: float) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.reading_paused and self.buffered < READ_LOW_WATER and self.transport:
                    self.reading_paused = False
                    self.transport.resume_reading()
                return chunk
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait(seconds, "read")

    @property
    def reusable(self) -> bool:
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.lost
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _expire(future: asyncio.Future[None], what: str) -> None:
    if not future.done():
        future.set_exception(UpstreamTimeout(f"the upstream {what} timed out"))


class UpstreamResponse:
    """The answer's status and headers; its body is read with aiter_raw() or aread(). The
    connection goes back to the pool when the body was read to its end, and is closed if the
    response is closed before."""

    __slots__ = ("_connection", "_content", "_headers", "_pool", "_released", "status_code")

    def __init__(self, connection: _Connection, pool: Pool) -> None:
        self._connection = connection
        self._pool = pool
        self.status_code = connection.status
        self._headers: dict[str, str] | None = None
        self._content: bytes | None = None
        self._released = False

    @property
    def headers(self) -> Mapping[str, str]:
        """Lower-cased header names (the last value of a repeated header)."""
        if self._headers is None:
            self._headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self._connection.raw_headers
            }
        return self._headers

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body has not been read; await aread() first")
        return self._content

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        connection, timeout = self._connection, self._pool.timeouts.read
        try:
            while (chunk := await connection.next_chunk(timeout)) is not None:
                yield chunk
        finally:
            await self.aclose()

    async def aread(self) -> bytes:
        if self._content is None:
            connection, timeout = self._connection, self._pool.timeouts.read
            pieces = []
            try:
                while (chunk := await connection.next_chunk(timeout)) is not None:
                    pieces.append(chunk)
            finally:
                await self.aclose()
            self._content = b"".join(pieces)
        return self._content

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._connection)


class Pool:
    """Keep-alive connections to one origin (scheme, host, port), at most `max_connections` open
    at once; a request beyond that waits for one (up to the pool timeout). Idle connections are
    reused newest first and dropped after `keepalive_seconds`."""

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        timeouts: Timeouts,
        keepalive_seconds: float,
        tls: ssl.SSLContext | None,
        proxies: OutboundProxies | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        default_port = parts.port is None or parts.port == (443 if parts.scheme == "https" else 80)
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host_header if default_port else f"{host_header}:{self.port}"
        self.tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
        # Decided once for the pool: its connections go through the outbound proxy, or not.
        via = proxies.for_origin(parts.scheme, self.host, self.port) if proxies else None
        self.tunnel = Tunnel(via, self.host, self.port) if via is not None else None
        self.max_connections = max_connections
        self.timeouts = timeouts
        self.keepalive_seconds = keepalive_seconds
        self.idle: list[_Connection] = []
        self.open = 0  # connected or connecting
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def encode(self, url: str, headers: Mapping[str, str], content: bytes) -> bytes:
        if not url.startswith(self.origin):
            raise ValueError(f"{url!r} is not under {self.origin}")
        target = url[len(self.origin) :] or "/"
        lines = [f"POST {target} HTTP/1.1\r\nhost: {self.host_header}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
        lines.append(f"accept-encoding: identity\r\ncontent-length: {len(content)}\r\n\r\n")
        return "".join(lines).encode("latin-1") + content

    async def post(self, url: str, headers: Mapping[str, str], content: bytes) -> UpstreamResponse:
        """Send a POST; return once the answer's head has arrived (the body is left to the
        caller, who must read it to its end or close the response)."""
        payload = self.encode(url, headers, content)
        for attempt in range(2):
            connection = await self._acquire()
            try:
                await connection.send(payload, self.timeouts)
            except _StaleConnection:
                self._discard(connection)
                if attempt:
                    raise
                continue
            except BaseException:
                self._discard(connection)
                raise
            return UpstreamResponse(connection, self)
        raise AssertionError("unreachable")

    async def _acquire(self) -> _Connection:
        if self.closed:
            raise UpstreamConnectError("the client is closed")
        now = time.monotonic()
        while self.idle:
            connection = self.idle.pop()
            if not connection.lost and now - connection.idle_since < self.keepalive_seconds:
                return connection
            self._discard(connection)
        if self.open >= self.max_connections:
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self.waiters.append(waiter)
            timer = self.loop.call_later(self.timeouts.pool, _expire_pool, waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    passed = waiter.result()
                    if passed is not None:
                        self.release(passed)
                    else:  # the slot we were handed goes to the next in line
                        self.open -= 1
                        self._wake_one()
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
                raise
            finally:
                timer.cancel()
            if handed is not None:
                return handed
            # A slot was freed: connect in it (it is already counted for us).
        else:
            self.open += 1
        try:
            return await self._connect()
        except BaseException:
            self.open -= 1
            self._wake_one()
            raise

    async def _connect(self) -> _Connection:
        if self.tunnel is not None:
            return await self._connect_through(self.tunnel)
        try:
            async with asyncio.timeout(self.timeouts.connect):
                _transport, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout("the upstream connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc}") from exc
        return connection

    async def _connect_through(self, tunnel: Tunnel) -> _Connection:
        """The connect timeout covers reaching the proxy, its answer and the TLS handshake."""
        try:
            async with asyncio.timeout(self.timeouts.connect):
                sock = await tunnel.open(self.loop)
                # From here the loop owns the socket: it closes it if this fails (asyncio and
                # uvloop alike; closing it here too could close a descriptor reused since).
                _transport, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    sock=sock,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                f"the upstream connect through the outbound proxy {tunnel.proxy.url} timed out"
            ) from None
        except TunnelError as exc:
            raise UpstreamConnectError(str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(
                f"{type(exc).__name__} through the outbound proxy {tunnel.proxy.url}: {exc}"
            ) from exc
        return connection

    def release(self, connection: _Connection) -> None:
        """Back to the pool if it can carry another exchange, else closed."""
        connection.active = False
        if not connection.reusable or self.closed:
            self._discard(connection)
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = time.monotonic()
        self.idle.append(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self.open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot is free: let the first waiter connect in it."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                self.open += 1
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.open -= len(self.idle)
        self.idle.clear()


def _expire_pool(waiter: asyncio.Future[_Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("no pooled upstream connection came free in time"))
