"""Servers a fault test owns and breaks on purpose: a Redis of its own (to flush, stop and start
again, with or without its data) and a TCP proxy in front of any server (to refuse connections,
or to accept them and then stay silent, as a hung Postgres does)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import redis

from tests.support import free_port

# A fresh redis-server answers within milliseconds; allow for a loaded CI machine.
REDIS_START_SECONDS = 10.0


class RedisServer:
    """redis-server on a loopback port of its own. `persistent` keeps an append-only file in
    `directory`, so a stop and start keeps the data (as a production Redis should); otherwise a
    restart comes back empty."""

    def __init__(self, directory: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.persistent
            else [
                "--appendonly",
                "no",
            ]
        )
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + REDIS_START_SECONDS
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target, in a thread with its own event loop, and breaks on
    demand: `refuse()` closes the listening socket and cuts every connection (connection
    refused), `hang()` keeps accepting but forwards nothing either way (a server gone silent:
    the kernel still answers, nothing else does), `heal()` forwards again (connections cut or
    hung before are dropped; clients reconnect)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        self._call(self._shut(listen=False))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def refuse(self) -> None:
        self.mode = "refuse"
        self._call(self._shut(listen=False))

    def hang(self) -> None:
        self.mode = "hang"

    def heal(self) -> None:
        self.mode = "forward"
        self._call(self._shut(listen=True))

    def _call(self, work: object) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(work, self._loop)  # type: ignore[arg-type]
        future.result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _shut(self, *, listen: bool) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()
        if listen:
            await self._listen()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.mode != "forward":
                await self._silence(reader)
                return
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._connections.add(upstream)
            with contextlib.suppress(OSError):
                await asyncio.gather(self._pipe(reader, upstream), self._pipe(up_reader, writer))
        except OSError:
            return  # the target refused: the client's connection is cut below
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._connections.discard(end)
                    end.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while True:
            data = await source.read(65536)
            if not data:
                with contextlib.suppress(OSError):
                    sink.write_eof()
                return
            while self.mode == "hang":
                # Silent: bytes are neither passed on nor answered until healed or cut.
                await asyncio.sleep(0.05)
            if self.mode != "forward":
                return
            sink.write(data)
            await sink.drain()

    async def _silence(self, reader: asyncio.StreamReader) -> None:
        """Read and drop whatever the client sends, answering nothing."""
        received = b"-"
        while self.mode == "hang" and received:
            received = await reader.read(65536)


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0
