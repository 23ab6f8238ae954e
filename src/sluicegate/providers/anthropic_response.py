"""Anthropic Messages answers -> OpenAI's: whole responses, usage and errors (streams are in
anthropic_stream). Pure functions over decoded JSON.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
# Anthropic error type -> OpenAI's (type, code), so OpenAI clients branch on familiar values.
_ERROR_KINDS: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", None),
    "permission_error": ("permission_error", None),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}
_STATUS_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", None),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
# How Anthropic words a prompt over the context window; OpenAI clients look for this code.
_CONTEXT_TOO_LONG = "prompt is too long"
# Enough of a non-JSON upstream error body to recognise it, without echoing a whole HTML page.
_MAX_ECHOED_BODY = 300


# --- response -----------------------------------------------------------------------------------


def messages_response_to_chat(
    resp: dict[str, Any], model: str, completion_id: str, created: int
) -> dict[str, Any]:
    """Anthropic Messages response -> OpenAI chat.completion object (with usage)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    blocks = resp.get("content")
    for block in blocks if isinstance(blocks, list) else []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            name, arguments = block.get("name"), _json_text(block.get("input", {}))
            call_id = str(block.get("id") or "")
            function = {"name": str(name or ""), "arguments": arguments}
            calls.append({"id": call_id, "type": "function", "function": function})
        # thinking and server-tool blocks have no place in a chat.completion message
    text = "".join(texts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if calls and not text else text,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    chat: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": openai_finish_reason(resp.get("stop_reason")),
            }
        ],
    }
    usage = resp.get("usage")
    if isinstance(usage, dict):  # absent usage stays absent so the caller knows to estimate
        chat["usage"] = anthropic_usage_to_openai(usage)
    return chat


def openai_finish_reason(stop_reason: Any) -> str:
    """Anthropic stop_reason -> OpenAI finish_reason."""
    return _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits, which orjson refuses
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def anthropic_usage_to_openai(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic usage -> OpenAI usage; cache reads and writes count as prompt tokens.

    prompt_tokens = input + cache_read + cache_creation; cached_tokens = cache_read.
    """
    fresh, output = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    prompt = fresh + read + written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    }


def _count(value: Any) -> int:
    # Anthropic sends null for cache fields when caching was not involved.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


# --- errors -------------------------------------------------------------------------------------


def anthropic_error_to_openai(status: int, body: bytes) -> dict[str, Any]:
    """An Anthropic error body {"type":"error","error":{...}} (or anything else) -> OpenAI's shape.

    Returns {"error": {"message", "type", "param", "code"}}.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return openai_error_from_anthropic(status, error)
    text = bytes(body[:_MAX_ECHOED_BODY]).decode("utf-8", "replace").strip() or "no body"
    kind, code = _kind_for_status(status)
    message = f"the Anthropic API answered HTTP {status}: {text}"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def openai_error_from_anthropic(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's inner error object {"type", "message"} -> {"error": {...}} in OpenAI's shape.

    `status` is the HTTP status, or 0 for an `error` event inside a stream.
    """
    message = error.get("message")
    message = message if isinstance(message, str) and message else "the Anthropic API failed"
    anthropic_kind = error.get("type")
    fallback = _kind_for_status(status)
    kind, code = (
        _ERROR_KINDS.get(anthropic_kind, fallback) if isinstance(anthropic_kind, str) else fallback
    )
    if kind == "invalid_request_error" and message.startswith(_CONTEXT_TOO_LONG):
        code = "context_length_exceeded"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _kind_for_status(status: int) -> tuple[str, str | None]:
    default = "server_error" if status >= 500 else "upstream_error"
    return _STATUS_KINDS.get(status, (default, None))
