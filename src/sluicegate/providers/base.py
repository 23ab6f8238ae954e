"""The adapter interface every provider family implements, and what flows through it.

An adapter only translates: it builds the upstream HTTP call from the client's OpenAI-shaped
body, and turns the upstream's answer (whole or streamed) back into OpenAI's wire format with
the usage it reported. Sending, timeouts and error statuses are the proxy's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson

from sluicegate.providers.config import ModelRoute, ProviderConfig


class Endpoint(StrEnum):
    """OpenAI API paths under /v1 that the gateway serves."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


@dataclass(slots=True)
class UpstreamCall:
    url: str
    headers: dict[str, str]
    content: bytes


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class UnsupportedRequest(ValueError):
    """The request cannot be served by this provider; becomes a 400 naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidUpstreamResponse(ValueError):
    """The upstream answered 2xx with something that is not the promised format."""


def json_answer(content: bytes) -> dict[str, Any]:
    """A 2xx upstream body as a JSON object, or InvalidUpstreamResponse saying what it was."""
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InvalidUpstreamResponse(f"upstream sent invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidUpstreamResponse("upstream sent JSON that is not an object")
    return document


class StreamReader(Protocol):
    @property
    def usage(self) -> Usage | None:
        """What the upstream reported, once it has."""
        ...

    def feed(self, data: bytes) -> bytes:
        """Take raw upstream bytes; return the OpenAI SSE bytes to send to the client now."""
        ...

    def finish(self) -> bytes:
        """Bytes still owed to the client at the end of a complete upstream stream."""
        ...

    @property
    def estimated_completion_tokens(self) -> int:
        """A guess from what was streamed, for when the upstream sent no usage."""
        ...


class Adapter(Protocol):
    provider: ProviderConfig

    def prepare(
        self, endpoint: Endpoint, body: dict[str, Any], route: ModelRoute, stream: bool
    ) -> UpstreamCall:
        """The upstream call for an OpenAI-shaped request body (which it may modify)."""
        ...

    def read(
        self, endpoint: Endpoint, content: bytes, route: ModelRoute
    ) -> tuple[bytes, Usage | None]:
        """A 2xx upstream body -> the OpenAI-shaped body for the client, and its usage."""
        ...

    def error_body(self, status: int, content: bytes) -> dict[str, Any]:
        """A non-2xx upstream body -> OpenAI's {"message", "type", "param", "code"}."""
        ...

    def stream_reader(
        self, endpoint: Endpoint, route: ModelRoute, include_usage: bool
    ) -> StreamReader: ...
