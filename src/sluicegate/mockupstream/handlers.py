"""Pure request handlers of the mock upstream: parsed JSON in, JSON document or SSE chunks out."""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import time
from dataclasses import dataclass
from typing import Any

import orjson

from sluicegate.mockupstream import tokens as tk

Result = dict[str, Any] | list[bytes]  # a JSON document, or the SSE chunks of a stream

DEFAULT_EMBEDDING_DIMENSIONS = 8
MAX_EMBEDDING_DIMENSIONS = 65536

_DONE = b"data: [DONE]\n\n"
_TOOL_ARG_PIECES = ('{"mock":', " true}")  # concatenates to tk.TOOL_CALL_ARGUMENTS
_next_id = itertools.count(1).__next__


class BadRequestError(Exception):
    """The request is well-formed JSON but not a valid API call (answered with a 400)."""


def openai_error(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> bytes:
    """OpenAI's error body."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def anthropic_error(message: str, kind: str) -> bytes:
    """Anthropic's error body."""
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BadRequestError(f"{what} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequestError(f"{what} must be an integer") from None


@dataclass(slots=True)
class ApiCall:
    """One parsed API request, as the handlers see it."""

    body: dict[str, Any]
    mock: dict[str, str]  # the x-mock-* request headers
    model: str
    no_usage: bool = False

    def header_int(self, name: str) -> int | None:
        return _int_or_none(self.mock.get(name), name)

    def max_tokens(self) -> int | None:
        value = self.body.get("max_tokens")
        if value is None:
            value = self.body.get("max_completion_tokens")
        return _int_or_none(value, "max_tokens")

    def messages(self) -> list[Any]:
        messages = self.body.get("messages", [])
        if not isinstance(messages, list):
            raise BadRequestError("'messages' must be an array")
        return messages


def _pieces(text: str) -> list[str]:
    """Stream pieces of a reply: one per word, each after the first with its leading space."""
    if not text:
        return []
    first, *rest = text.split(" ")
    return [first, *(" " + w for w in rest)]


def _openai_stream(head: bytes, choices: list[bytes], usage: Any, include: bool) -> list[bytes]:
    """Wrap choice JSON fragments into OpenAI SSE chunks, with OpenAI's usage-chunk convention."""
    with_usage = include and usage is not None
    tail = b'],"usage":null}\n\n' if with_usage else b"]}\n\n"
    out = [head + c + tail for c in choices]
    if with_usage:
        out.append(head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n")
    out.append(_DONE)
    return out


def _stream_head(rid: str, obj: str, created: int, model: str) -> bytes:
    return b"".join(
        (
            b'data: {"id":"',
            rid.encode(),
            b'","object":"',
            obj.encode(),
            b'","created":',
            str(created).encode(),
            b',"model":',
            orjson.dumps(model),
            b',"system_fingerprint":"fp_mock","choices":[',
        )
    )


def _openai_tool(body: dict[str, Any], messages: list[Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools or not isinstance(tools, list) or choice == "none":
        return None
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        return str(choice["function"]["name"])
    first = tools[0] if isinstance(tools[0], dict) else {}
    return str((first.get("function") or {}).get("name") or first.get("name") or "tool")


def chat_completions(call: ApiCall) -> Result:
    """POST /v1/chat/completions: text, tool call or JSON-mode reply; SSE when streaming."""
    body = call.body
    messages = call.messages()
    n = _int_or_none(body.get("n"), "n") or 1
    if not 1 <= n <= 128:
        raise BadRequestError("n must be between 1 and 128")
    max_tokens, override = call.max_tokens(), call.header_int("x-mock-completion-tokens")
    length = tk.completion_length(max_tokens, override)
    prompt = tk.chat_prompt_tokens(messages)
    usage = (
        None
        if call.no_usage
        else tk.chat_usage(prompt, length, n, call.header_int("x-mock-cached-tokens"))
    )
    tool = _openai_tool(body, messages)
    rid, created = f"chatcmpl-mock{_next_id():08x}", int(time.time())
    text = ""
    if tool is not None:
        finish = "tool_calls"
        call_id = f"call_mock_{_next_id()}"
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool, "arguments": tk.TOOL_CALL_ARGUMENTS},
                }
            ],
        }
    else:
        finish = "length" if tk.is_truncated(max_tokens, override) else "stop"
        fmt = body.get("response_format")
        json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
        text = tk.json_reply_text(length) if json_mode else tk.reply_text(length)
        message = {"role": "assistant", "content": text, "refusal": None}
    if not body.get("stream"):
        doc: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
        }
        if usage is not None:
            doc["usage"] = usage
        return doc
    if tool is not None:
        first: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool, "arguments": ""},
                }
            ],
        }
        deltas: list[dict[str, Any]] = [
            {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in _TOOL_ARG_PIECES
        ]
    else:
        first = {"role": "assistant", "content": ""}
        deltas = [{"content": p} for p in _pieces(text)]
    frags = [orjson.dumps(first)] + [orjson.dumps(d) for d in deltas] + [b"{}"]
    fins = [b"null"] * (len(frags) - 1) + [b'"' + finish.encode() + b'"']
    choices = [
        b'{"index":%d,"delta":%s,"logprobs":null,"finish_reason":%s}' % (i, frag, fin)
        for frag, fin in zip(frags, fins, strict=True)
        for i in range(n)
    ]
    include = (body.get("stream_options") or {}).get("include_usage") is True
    return _openai_stream(
        _stream_head(rid, "chat.completion.chunk", created, call.model), choices, usage, include
    )


def completions(call: ApiCall) -> Result:
    """POST /v1/completions (legacy): one choice per prompt and per n."""
    body = call.body
    prompt = body.get("prompt", "")
    if isinstance(prompt, str) or (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        prompts: list[Any] = [prompt]
    elif isinstance(prompt, list) and all(isinstance(p, str | list) for p in prompt):
        prompts = prompt
    else:
        raise BadRequestError("'prompt' must be a string, an array of strings or token arrays")
    n = _int_or_none(body.get("n"), "n") or 1
    count = max(1, len(prompts)) * n
    max_tokens, override = call.max_tokens(), call.header_int("x-mock-completion-tokens")
    length = tk.completion_length(max_tokens, override)
    prompt_tokens = sum(tk.legacy_prompt_tokens(p) for p in prompts)
    usage = (
        None
        if call.no_usage
        else {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": length * count,
            "total_tokens": prompt_tokens + length * count,
        }
    )
    finish = "length" if tk.is_truncated(max_tokens, override) else "stop"
    rid, created, text = f"cmpl-mock{_next_id():08x}", int(time.time()), tk.reply_text(length)
    if not body.get("stream"):
        doc: dict[str, Any] = {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": call.model,
            "system_fingerprint": "fp_mock",
            "choices": [
                {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
                for i in range(count)
            ],
        }
        if usage is not None:
            doc["usage"] = usage
        return doc
    steps = [(orjson.dumps(p), b"null") for p in _pieces(text)] + [
        (b'""', b'"%s"' % finish.encode())
    ]
    choices = [
        b'{"text":%s,"index":%d,"logprobs":null,"finish_reason":%s}' % (piece, i, fin)
        for piece, fin in steps
        for i in range(count)
    ]
    include = (body.get("stream_options") or {}).get("include_usage") is True
    return _openai_stream(
        _stream_head(rid, "text_completion", created, call.model), choices, usage, include
    )


def _embedding(item: str | list[int], dims: int, as_base64: bool) -> list[float] | str:
    """Deterministic vector in [-1, 1): blake2b blocks read as uint16, exact in float32."""
    key = item.encode() if isinstance(item, str) else b"\0ids:" + orjson.dumps(item)
    raw = bytearray()
    block = 0
    while len(raw) < 2 * dims:
        raw += hashlib.blake2b(key, digest_size=64, salt=block.to_bytes(16, "little")).digest()
        block += 1
    values = [(u - 32768) / 32768.0 for u in struct.unpack_from(f"<{dims}H", raw)]
    if as_base64:
        return base64.b64encode(struct.pack(f"<{dims}f", *values)).decode()
    return values


def embeddings(call: ApiCall) -> Result:
    """POST /v1/embeddings: deterministic vectors, as floats or base64 float32."""
    body = call.body
    raw = body.get("input")
    if isinstance(raw, str) or (
        isinstance(raw, list)
        and raw
        and all(isinstance(t, int) and not isinstance(t, bool) for t in raw)
    ):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str | list) for x in raw):
        items = raw
    else:
        raise BadRequestError("'input' must be a string, an array of strings or token arrays")
    dims = _int_or_none(body.get("dimensions"), "dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if not 1 <= dims <= MAX_EMBEDDING_DIMENSIONS:
        raise BadRequestError("dimensions out of range")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise BadRequestError("encoding_format must be 'float' or 'base64'")
    doc: dict[str, Any] = {
        "object": "list",
        "model": call.model,
        "data": [
            {"object": "embedding", "index": i, "embedding": _embedding(x, dims, fmt == "base64")}
            for i, x in enumerate(items)
        ],
    }
    if not call.no_usage:
        used = sum(tk.embedding_input_tokens(x) for x in items)
        doc["usage"] = {"prompt_tokens": used, "total_tokens": used}
    return doc


def _anthropic_tool(body: dict[str, Any], messages: list[Any]) -> str | None:
    tools = body.get("tools")
    raw_choice = body.get("tool_choice")
    choice: dict[str, Any] = raw_choice if isinstance(raw_choice, dict) else {}
    if not tools or not isinstance(tools, list) or choice.get("type") == "none":
        return None
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content")
    if isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    ):
        return None
    if choice.get("type") == "tool" and choice.get("name"):
        return str(choice["name"])
    first = tools[0] if isinstance(tools[0], dict) else {}
    return str(first.get("name") or "tool")


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def messages(call: ApiCall) -> Result:
    """POST /v1/messages (Anthropic): text or tool_use block; Anthropic's SSE events."""
    body = call.body
    msgs = call.messages()
    total = tk.anthropic_input_tokens(msgs, body.get("system"))
    cached = tk.cached_tokens(call.header_int("x-mock-cached-tokens"), total)
    max_tokens, override = call.max_tokens(), call.header_int("x-mock-completion-tokens")
    length = tk.completion_length(max_tokens, override)
    tool = _anthropic_tool(body, msgs)
    mid = f"msg_mock{_next_id():08x}"
    text = ""
    if tool is not None:
        stop = "tool_use"
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_mock_{_next_id()}",
            "name": tool,
            "input": {"mock": True},
        }
    else:
        stop = "max_tokens" if tk.is_truncated(max_tokens, override) else "end_turn"
        text = tk.reply_text(length)
        block = {"type": "text", "text": text}
    usage = {
        "input_tokens": total - cached,
        "output_tokens": length,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }
    doc: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [block],
        "stop_reason": stop,
        "stop_sequence": None,
    }
    if not body.get("stream"):
        if not call.no_usage:
            doc["usage"] = usage
        return doc
    doc.update(content=[], stop_reason=None)
    if not call.no_usage:
        doc["usage"] = {**usage, "output_tokens": 1}
    if tool is not None:
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in _TOOL_ARG_PIECES]
    else:
        start = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _pieces(text)]
    final: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": None},
    }
    if not call.no_usage:
        final["usage"] = {"output_tokens": length}
    return [
        _event(b"message_start", {"type": "message_start", "message": doc}),
        _event(
            b"content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": start},
        ),
        _event(b"ping", {"type": "ping"}),
        *(
            _event(b"content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
            for d in deltas
        ),
        _event(b"content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event(b"message_delta", final),
        _event(b"message_stop", {"type": "message_stop"}),
    ]
