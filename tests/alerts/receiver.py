"""A webhook receiver over loopback for the alert tests: a small HTTP/1.1 server on 127.0.0.1
that records every request and answers with the statuses a test queues (200 otherwise)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.default = Answer(200, body=b"ok")
        self._queued: deque[Answer] = deque()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(
        self,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` requests so (in the order queued)."""
        for _ in range(times):
            self._queued.append(Answer(status, headers or {}, body, delay))

    def always(self, status: int, *, body: bytes = b"", delay: float = 0.0) -> None:
        self.default = Answer(status, {}, body, delay)

    def keys(self) -> list[str]:
        """The Idempotency-Key of every request received, in order."""
        return [r.headers["idempotency-key"] for r in self.requests]

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (0: a free one): a receiver that comes up late on a known port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # A sender that hangs up mid-request (its timeout) is no failure of the receiver.
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self._answer(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, path, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Received(method, path, headers, body))
        answer = self._queued.popleft() if self._queued else self.default
        if answer.delay:
            await asyncio.sleep(answer.delay)
        head = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}"]
        head += [f"{name}: {value}" for name, value in answer.headers.items()]
        head += [f"Content-Length: {len(answer.body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(head).encode("latin-1") + answer.body)
        await writer.drain()


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
