"""The proxy's upstream HTTP client (providers/transport.py) against real servers on loopback:
the mock upstream for ordinary answers, small asyncio servers for the awkward ones (chunks
written piece by piece, answers cut off, never sent, or closed without a length, TLS with a
certificate of the test's own)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.providers.transport import (
    READ_HIGH_WATER,
    Pool,
    Timeouts,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from tests.support import ServerProcess, free_port, tls_pair

FAST = Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0)
CHAT = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
)
JSON = {"content-type": "application/json", "authorization": "Bearer test"}

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def pool_for(base_url: str, **options: object) -> Pool:
    arguments: dict[str, object] = {
        "max_connections": 4,
        "timeouts": FAST,
        "keepalive_seconds": 30.0,
        "tls": None,
    }
    return Pool(base_url, **(arguments | options))  # type: ignore[arg-type]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def answer_once(raw: bytes) -> Handler:
    """A handler that reads one request, writes `raw` and closes the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    return handler


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A loopback server answering with `handler`; yields its base URL."""
    connections: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await handler(reader, writer)  # the client may close first: that is fine
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = listening.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        listening.close()
        for writer in connections:
            writer.close()


async def test_sequential_requests_share_one_kept_alive_connection(
    mock_upstream: ServerProcess,
) -> None:
    pool = pool_for(mock_upstream.base_url)
    for _ in range(5):
        response = await pool.post(f"{mock_upstream.base_url}/v1/chat/completions", JSON, CHAT)
        assert response.status_code == 200
        body = orjson.loads(await response.aread())
        assert body["object"] == "chat.completion"
        assert response.headers["content-type"] == "application/json"
    assert pool.open == 1
    assert len(pool.idle) == 1
    await pool.aclose()


async def test_a_stream_arrives_piece_by_piece_before_it_ends() -> None:
    release = asyncio.Event()

    async def chunks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()  # the client must see "first" while the answer is still open
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        await read_request(reader)  # kept alive: a second request on the same connection

    async with server(chunks) as url:
        pool = pool_for(url)
        response = await pool.post(f"{url}/v1/chat/completions", JSON, CHAT)
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"first"
        release.set()
        assert [piece async for piece in pieces] == [b"second"]
        assert pool.idle and pool.open == 1  # read to its end: back in the pool
        await pool.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=1, max_value=30), max_size=12),
)
def test_any_split_of_a_chunked_answer_into_writes_gives_the_same_body(
    pieces: list[bytes], cuts: list[int]
) -> None:
    wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    wire += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"

    async def scattered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        rest = wire
        for cut in cuts:
            writer.write(rest[:cut])
            await writer.drain()
            await asyncio.sleep(0)
            rest = rest[cut:]
        writer.write(rest)
        await writer.drain()
        await reader.read()  # until the client closes

    async def run() -> bytes:
        async with server(scattered) as url:
            pool = pool_for(url)
            try:
                response = await pool.post(f"{url}/x", JSON, CHAT)
                return await response.aread()
            finally:
                await pool.aclose()

    assert asyncio.run(run()) == b"".join(pieces)


async def test_a_full_pool_makes_the_next_request_wait_then_time_out() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with server(slow) as url:
        pool = pool_for(url, max_connections=1, timeouts=Timeouts(2.0, 2.0, 2.0, pool=0.3))
        held = await pool.post(f"{url}/x", JSON, CHAT)  # its body not read yet: slot taken
        with pytest.raises(UpstreamTimeout, match="pooled"):
            await pool.post(f"{url}/x", JSON, CHAT)
        waiting = asyncio.ensure_future(pool.post(f"{url}/x", JSON, CHAT))
        await asyncio.sleep(0.05)
        assert await held.aread() == b"ok"  # frees the connection for the waiting request
        second = await waiting
        assert await second.aread() == b"ok"
        assert pool.open == 1
        await pool.aclose()


async def test_an_upstream_that_never_answers_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async with server(silent) as url:
        pool = pool_for(url, timeouts=Timeouts(2.0, read=0.2, write=2.0, pool=2.0))
        with pytest.raises(UpstreamTimeout, match="read"):
            await pool.post(f"{url}/x", JSON, CHAT)
        assert pool.open == 0
        await pool.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    pool = pool_for(url)
    with pytest.raises(UpstreamConnectError):
        await pool.post(f"{url}/x", JSON, CHAT)
    assert pool.open == 0


async def test_an_answer_cut_off_mid_body_is_a_protocol_error_and_the_connection_is_dropped() -> (
    None
):
    cut = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
    async with server(cut) as url:
        pool = pool_for(url)
        response = await pool.post(f"{url}/x", JSON, CHAT)
        assert response.status_code == 200
        with pytest.raises(UpstreamProtocolError):
            await response.aread()
        assert pool.open == 0 and not pool.idle
        await pool.aclose()


async def test_an_answer_without_a_length_ends_with_its_connection() -> None:
    close_delimited = answer_once(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
    async with server(close_delimited) as url:
        pool = pool_for(url)
        response = await pool.post(f"{url}/x", JSON, CHAT)
        assert await response.aread() == b"all of it"
        assert pool.open == 0  # not kept alive
        await pool.aclose()


async def test_a_response_closed_before_its_end_does_not_go_back_to_the_pool(
    mock_upstream: ServerProcess,
) -> None:
    pool = pool_for(mock_upstream.base_url)
    stream = orjson.dumps(orjson.loads(CHAT) | {"stream": True})
    slow = JSON | {"x-mock-stream-delay-ms": "200"}  # still streaming when it is closed
    response = await pool.post(f"{mock_upstream.base_url}/v1/chat/completions", slow, stream)
    pieces = response.aiter_raw()
    assert b"data:" in await anext(pieces)
    await response.aclose()
    assert pool.open == 0 and not pool.idle
    again = await pool.post(f"{mock_upstream.base_url}/v1/chat/completions", JSON, CHAT)
    assert again.status_code == 200
    await again.aread()
    await pool.aclose()


async def test_a_slow_reader_stops_the_socket_being_read_instead_of_buffering() -> None:
    body = b"x" * (8 * READ_HIGH_WATER)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    async with server(big) as url:
        pool = pool_for(url)
        response = await pool.post(f"{url}/x", JSON, CHAT)
        connection = response._connection
        received, most_buffered = 0, 0
        async for piece in response.aiter_raw():
            received += len(piece)
            await asyncio.sleep(0.002)  # a client slower than loopback
            most_buffered = max(most_buffered, connection.buffered)
        assert received == len(body)
        # Reading stops past the high-water mark; what was already read still arrives.
        assert most_buffered < READ_HIGH_WATER + 512 * 1024
        await pool.aclose()


async def test_https_upstreams_are_verified_and_served(tmp_path: Path) -> None:
    server_tls, client_tls = tls_pair(tmp_path)
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsecured")
            await writer.drain()

    async with server(answer, tls=server_tls) as url:
        pool = pool_for(url, tls=client_tls)
        for _ in range(2):
            response = await pool.post(f"{url}/v1/chat/completions", JSON, CHAT)
            assert await response.aread() == b"secured"
        assert pool.open == 1
        await pool.aclose()
        # Without the certificate among the trusted ones, the handshake is refused.
        untrusting = pool_for(url, tls=ssl.create_default_context())
        with pytest.raises(UpstreamConnectError):
            await untrusting.post(f"{url}/v1/chat/completions", JSON, CHAT)
    request = seen[0]
    assert request.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer test\r\n" in request
    assert request.endswith(CHAT)
