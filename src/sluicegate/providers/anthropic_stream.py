"""Anthropic's streamed Messages events -> OpenAI chat.completion.chunk objects, and an SSE parser.

Pure and synchronous: the adapter reads bytes, calls parse_sse, then feeds StreamTranslator.
"""

from __future__ import annotations

from typing import Any

from sluicegate.providers.anthropic_response import (
    anthropic_usage_to_openai,
    openai_error_from_anthropic,
    openai_finish_reason,
)

# What a stream's message_start and message_delta may report, each a running total.
_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


class StreamTranslator:
    """Feed Anthropic SSE events, get OpenAI chat.completion.chunk dicts back."""

    def __init__(self, model: str, completion_id: str, created: int, include_usage: bool) -> None:
        self.usage: dict[str, Any] | None = None
        self.completion_text_chars = 0
        self.error: dict[str, Any] | None = None
        self._head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
        self._include_usage = include_usage
        self._started = False
        self._finish_sent = False
        self._finished = False
        self._anthropic_usage: dict[str, int] = {}
        # Anthropic numbers every content block; OpenAI numbers only the tool calls.
        self._tool_index: dict[Any, int] = {}
        self._tool_has_arguments: dict[Any, bool] = {}

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """One Anthropic event (name and decoded data) -> the OpenAI chunks it makes."""
        kind = data.get("type") if event in ("", "message") else event
        if kind == "message_start":
            message = data.get("message")
            self._take_usage(message.get("usage") if isinstance(message, dict) else None)
            return self._start()
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta"))
        if kind == "content_block_stop":
            return self._block_stop(data.get("index"))
        if kind == "message_delta":
            self._take_usage(data.get("usage"))
            delta = data.get("delta")
            stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if self._finish_sent:
                return []
            self._finish_sent = True
            return self._chunks({}, openai_finish_reason(stop_reason))
        if kind == "error":
            error = data.get("error")
            self.error = openai_error_from_anthropic(0, error if isinstance(error, dict) else {})
        return []  # ping, message_stop and event types newer than this code

    def finish(self) -> list[dict[str, Any]]:
        """Chunks still owed at the end (the final usage chunk with choices [] when include_usage).

        Idempotent. No usage chunk when Anthropic sent no usage: the caller estimates instead.
        """
        if self._finished:
            return []
        self._finished = True
        if not self._include_usage or self.usage is None:
            return []
        return [{**self._head, "choices": [], "usage": self.usage}]

    def _start(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}}
        return [self._chunk({**choice, "logprobs": None, "finish_reason": None})]

    def _block_start(self, index: Any, block: Any) -> list[dict[str, Any]]:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            return self._text(block.get("text"))
        if kind != "tool_use" or index in self._tool_index:
            return []  # thinking and server-tool blocks have no OpenAI counterpart
        k = self._tool_index[index] = len(self._tool_index)
        self._tool_has_arguments[index] = False
        function = {"name": str(block.get("name") or ""), "arguments": ""}
        call = {"index": k, "id": str(block.get("id") or ""), "type": "function"}
        return self._chunks({"tool_calls": [{**call, "function": function}]})

    def _block_delta(self, index: Any, delta: Any) -> list[dict[str, Any]]:
        kind = delta.get("type") if isinstance(delta, dict) else None
        if kind == "text_delta":
            return self._text(delta.get("text"))
        if kind == "input_json_delta" and index in self._tool_index:
            return self._arguments(index, delta.get("partial_json"))
        return []

    def _block_stop(self, index: Any) -> list[dict[str, Any]]:
        # A tool called without parameters may stream no JSON at all; OpenAI clients parse
        # the arguments, so they get "{}" rather than "".
        if index in self._tool_index and not self._tool_has_arguments[index]:
            return self._arguments(index, "{}")
        return []

    def _text(self, text: Any) -> list[dict[str, Any]]:
        if not isinstance(text, str) or not text:
            return []
        self.completion_text_chars += len(text)
        return self._chunks({"content": text})

    def _arguments(self, index: Any, partial: Any) -> list[dict[str, Any]]:
        if not isinstance(partial, str) or not partial:
            return []
        self._tool_has_arguments[index] = True
        self.completion_text_chars += len(partial)
        call = {"index": self._tool_index[index], "function": {"arguments": partial}}
        return self._chunks({"tool_calls": [call]})

    def _chunks(
        self, delta: dict[str, Any], finish_reason: str | None = None
    ) -> list[dict[str, Any]]:
        # The role chunk comes first even if the stream skipped message_start.
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return [*self._start(), self._chunk(choice)]

    def _chunk(self, choice: dict[str, Any]) -> dict[str, Any]:
        chunk = {**self._head, "choices": [choice]}
        if self._include_usage:
            chunk["usage"] = None
        return chunk

    def _take_usage(self, usage: Any) -> None:
        # Counts are cumulative, so the latest value of each field is the one that holds.
        if not isinstance(usage, dict):
            return
        for field in _USAGE_FIELDS:
            value = usage.get(field)
            if isinstance(value, int) and not isinstance(value, bool):
                self._anthropic_usage[field] = value
        if self._anthropic_usage:
            self.usage = anthropic_usage_to_openai(self._anthropic_usage)


def parse_sse(buffer: bytearray) -> list[tuple[str, bytes]]:
    """Take complete SSE events out of `buffer` (mutating it) as (event name, data) pairs.

    A partial tail stays for the next call; \\n and \\r\\n line endings, multi-line data, comments.
    """
    events: list[tuple[str, bytes]] = []
    data: list[bytes]
    name, data = "", []
    start = consumed = 0
    while (end := buffer.find(b"\n", start)) >= 0:
        line = bytes(buffer[start:end]).removesuffix(b"\r")
        start = end + 1
        if not line:  # a blank line ends the event; one without data is not dispatched
            if data:
                events.append((name or "message", b"\n".join(data)))
            name, data, consumed = "", [], start
            continue
        field, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)
        # comments (empty field name), id and retry mean nothing to a one-shot upstream call
    del buffer[:consumed]
    return events
