"""A CONNECT proxy on loopback for the tests of the outbound proxy: it records what it was asked
and pipes bytes both ways (or refuses, demands credentials, or never answers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Connect:
    """One CONNECT the proxy received."""

    target: str
    headers: dict[str, str]


@dataclass
class ConnectProxy:
    """A CONNECT proxy on loopback: demands `credentials` (a Proxy-Authorization value) when
    given, answers `refuse` (a whole answer) instead of opening a tunnel when given, else
    connects to the target, answers 200 and pipes bytes both ways. It records every CONNECT and
    every byte clients sent through its tunnels."""

    credentials: str | None = None
    refuse: bytes | None = None
    silent: bool = False  # never answer
    seen: list[Connect] = field(default_factory=list)
    relayed: bytearray = field(default_factory=bytearray)
    port: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await self._tunnel(reader, writer)
        finally:
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        method, target, _version = request_line.split(" ")
        assert method == "CONNECT"
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }
        self.seen.append(Connect(target, headers))
        if self.silent:
            await reader.read()  # until the client gives up
            return
        if self.refuse is not None:
            writer.write(self.refuse)
            await writer.drain()
            return
        if self.credentials is not None and headers.get("proxy-authorization") != self.credentials:
            writer.write(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n'
            )
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(
            host.strip("[]"), int(port)
        )
        self._writers.append(upstream_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            _pipe(reader, upstream_writer, self.relayed), _pipe(upstream_reader, writer, None)
        )

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: bytearray | None
) -> None:
    # Either side may hang up mid-copy (a client done with the tunnel): that ends the pipe.
    with contextlib.suppress(ConnectionError):
        try:
            while data := await reader.read(65536):
                if record is not None:
                    record.extend(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def connect_proxy(**options: object) -> AsyncIterator[ConnectProxy]:
    proxy = ConnectProxy(**options)  # type: ignore[arg-type]
    listening = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    proxy.port = listening.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        listening.close()
        proxy.close()
