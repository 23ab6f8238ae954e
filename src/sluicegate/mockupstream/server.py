"""Serve the mock upstream with uvicorn (uvloop + httptools), tuned not to be the bottleneck."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sluicegate.mockupstream.app import create_mock_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18080


class _DeferredWriteTransport:
    """Batches a connection's writes until the end of the current event-loop iteration.

    uvicorn writes the response head and each body message separately, right away. Deferring
    them lets the loop read every ready socket first and send each response in one send(); on
    loopback that measured about +50% requests/s. Chunks of a stream paced with
    x-mock-stream-delay-ms still leave one by one, as each pause ends an iteration.
    """

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(data)

    def _flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        # A deliberate cut closes right after a partial body: that part must still go out.
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class MockHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with writes batched per event-loop iteration."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check here.
        wrapped = _DeferredWriteTransport(self.transport, self.loop)
        self.transport = cast(asyncio.Transport, wrapped)


IDLE_KEEPALIVE_SECONDS = 75


def run(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve a fresh mock upstream on ``host:port`` until interrupted."""
    uvicorn.run(
        create_mock_app(),
        host=host,
        port=port,
        loop="uvloop",
        http=MockHttpProtocol,  # uvicorn's "httptools" implementation, batched writes
        lifespan="on",
        ws="none",  # no websocket routes; also keeps upgrades away from the wrapped transport
        log_level="warning",
        access_log=False,
        # Nothing sits in front of the mock, and forwarded-header rewriting costs per request.
        proxy_headers=False,
        server_header=False,
        # Like a real provider, keep idle connections longer than the gateway does (30 s): with
        # uvicorn's 5 s default the mock closed connections the gateway was just reusing, and a
        # request then died on a reset before any answer.
        timeout_keep_alive=IDLE_KEEPALIVE_SECONDS,
    )
