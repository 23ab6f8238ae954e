"""Anthropic Messages behind OpenAI's chat completions API: requests, answers and streams are
translated both ways (the translation itself lives in anthropic_translate / _response / _stream)."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import orjson

from sluicegate.providers.anthropic_response import (
    anthropic_error_to_openai,
    messages_response_to_chat,
)
from sluicegate.providers.anthropic_stream import StreamTranslator, parse_sse
from sluicegate.providers.anthropic_translate import (
    ANTHROPIC_VERSION,
    TranslationError,
    chat_request_to_messages,
)
from sluicegate.providers.base import (
    Endpoint,
    InvalidUpstreamResponse,
    UnsupportedRequest,
    UpstreamCall,
    Usage,
    json_answer,
)
from sluicegate.providers.config import ModelRoute, ProviderConfig
from sluicegate.providers.estimate import tokens_for_chars

# Completion ids only need to be unique within a process's lifetime and readable in logs.
_PROCESS_TAG = os.urandom(4).hex()
_SEQUENCE = itertools.count()


def _completion_id() -> str:
    return f"chatcmpl-{_PROCESS_TAG}{next(_SEQUENCE):x}"


def _usage(openai_usage: dict[str, Any] | None) -> Usage | None:
    if not openai_usage:
        return None
    details = openai_usage.get("prompt_tokens_details") or {}
    return Usage(
        int(openai_usage.get("prompt_tokens", 0)),
        int(openai_usage.get("completion_tokens", 0)),
        int(details.get("cached_tokens", 0)),
    )


class AnthropicStreamReader:
    """Anthropic SSE events in, OpenAI chat.completion.chunk events out."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self._buffer = bytearray()
        self._translator = StreamTranslator(
            model, _completion_id(), int(time.time()), include_usage
        )
        self._error_sent = False

    @property
    def usage(self) -> Usage | None:
        return _usage(self._translator.usage)

    @property
    def estimated_completion_tokens(self) -> int:
        return tokens_for_chars(self._translator.completion_text_chars)

    def feed(self, data: bytes) -> bytes:
        self._buffer.extend(data)
        out: list[bytes] = []
        for event, payload in parse_sse(self._buffer):
            try:
                document = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(document, dict):
                continue
            out.extend(_sse(chunk) for chunk in self._translator.feed(event, document))
            if self._translator.error is not None and not self._error_sent:
                self._error_sent = True
                out.append(b"data: " + orjson.dumps(self._translator.error) + b"\n\n")
        return b"".join(out)

    def finish(self) -> bytes:
        tail = b"".join(_sse(chunk) for chunk in self._translator.finish())
        return tail + b"data: [DONE]\n\n"


def _sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class AnthropicAdapter:
    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **dict(provider.headers),
        }
        if provider.api_key:
            self._headers["x-api-key"] = provider.api_key
        # Anthropic's own clients take the base URL without the version, the OpenAI habit is
        # with it: either works.
        base = provider.base_url
        self._url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def prepare(
        self, endpoint: Endpoint, body: dict[str, Any], route: ModelRoute, stream: bool
    ) -> UpstreamCall:
        if endpoint is not Endpoint.CHAT:
            raise UnsupportedRequest(
                f"The model '{route.id}' is served by Anthropic, which answers chat completions "
                f"only, not /v1/{endpoint.value}.",
                param="model",
            )
        try:
            translated = chat_request_to_messages(
                body, route.upstream_model, route.max_output_tokens
            )
        except TranslationError as exc:
            raise UnsupportedRequest(str(exc), exc.param) from None
        if stream:
            translated["stream"] = True
        return UpstreamCall(self._url, self._headers, orjson.dumps(translated))

    def read(
        self, endpoint: Endpoint, content: bytes, route: ModelRoute
    ) -> tuple[bytes, Usage | None]:
        document = json_answer(content)
        if not isinstance(document.get("content"), list):
            raise InvalidUpstreamResponse("upstream sent something that is not a Messages answer")
        chat = messages_response_to_chat(
            document,
            str(document.get("model") or route.upstream_model),
            _completion_id(),
            int(time.time()),
        )
        return orjson.dumps(chat), _usage(chat.get("usage"))

    def error_body(self, status: int, content: bytes) -> dict[str, Any]:
        error: dict[str, Any] = anthropic_error_to_openai(status, content)["error"]
        return error

    def stream_reader(
        self, endpoint: Endpoint, route: ModelRoute, include_usage: bool
    ) -> AnthropicStreamReader:
        return AnthropicStreamReader(route.upstream_model, include_usage)
