"""OpenAI chat completion requests -> Anthropic Messages requests, and the module's public API.

Pure functions over decoded JSON. The answers' side lives in anthropic_response (whole answers,
usage, errors) and anthropic_stream; both are re-exported here, so every name is importable here.
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

import orjson

from sluicegate.providers.anthropic_response import (
    anthropic_error_to_openai,
    anthropic_usage_to_openai,
    messages_response_to_chat,
)
from sluicegate.providers.anthropic_stream import StreamTranslator, parse_sse

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "StreamTranslator",
    "TranslationError",
    "anthropic_error_to_openai",
    "anthropic_usage_to_openai",
    "chat_request_to_messages",
    "messages_response_to_chat",
    "parse_sse",
]

ANTHROPIC_VERSION = "2023-06-01"
# The caller's fallback for `max_output_tokens` when the catalog has no limit for a model:
# Anthropic requires max_tokens, and every current Claude model accepts this much.
DEFAULT_MAX_TOKENS = 4096

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_ROLES_HINT = "use system, developer, user, assistant or tool"
# Anthropic has no JSON mode, so response_format is approximated by an instruction in the
# system prompt: the model usually complies, but nothing enforces it as OpenAI's mode does.
_JSON_INSTRUCTION = (
    "Answer with a single valid JSON object and nothing else: no prose, no code fences."
)


class TranslationError(ValueError):
    """The request cannot be expressed for Anthropic; message names the field (becomes a 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _fail(param: str, problem: str) -> NoReturn:
    raise TranslationError(f"{param}: {problem}", param)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def chat_request_to_messages(
    body: dict[str, Any], upstream_model: str, max_output_tokens: int
) -> dict[str, Any]:
    """OpenAI chat completion request body -> Anthropic Messages request body."""
    if not isinstance(body, dict):
        raise TranslationError("the request body must be a JSON object", None)
    _check_unsupported(body)
    system, messages = _translate_messages(body.get("messages"))
    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": _max_tokens(body, max_output_tokens),
        "messages": messages,
    }
    instruction = _response_format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = _finite_number(body[name], name)
    stops = _stop_sequences(body.get("stop"))
    if stops:
        out["stop_sequences"] = stops
    stream = body.get("stream")
    if stream is not None:
        if not isinstance(stream, bool):
            _fail("stream", "must be true or false")
        out["stream"] = stream
    user_id = _user_id(body)
    if user_id:
        out["metadata"] = {"user_id": user_id}
    tools = _tools(body.get("tools"))
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tools:
        out["tools"] = tools
        if choice:
            out["tool_choice"] = choice
    return out


def _check_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (not _is_int(n) or n < 1):
        _fail("n", "must be a positive integer")
    if n is not None and n > 1:
        _fail("n", "Anthropic models return one choice per request; send n=1 or several requests")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            _fail(legacy, "the legacy functions API is not supported here; use tools/tool_choice")


def _translate_messages(raw: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """OpenAI messages -> (system texts, Anthropic turns with alternating roles)."""
    if not isinstance(raw, list) or not raw:
        _fail("messages", "must be a non-empty array of message objects")
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            _fail(where, "must be an object with a role and content")
        role = message.get("role")
        if not isinstance(role, str):
            _fail(f"{where}.role", f"must be a string; {_ROLES_HINT}")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), f"{where}.content")
            if text:
                system.append(text)
        elif role == "user":
            _append_turn(turns, "user", _content(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append_turn(turns, "assistant", _assistant_content(message, where))
        elif role == "tool":
            _append_turn(turns, "user", [_tool_result(message, where)])
        else:
            _fail(f"{where}.role", f"unsupported role {role!r}; {_ROLES_HINT}")
    if not turns:
        _fail("messages", "needs at least one user or assistant message besides system prompts")
    return system, turns


def _append_turn(turns: list[dict[str, Any]], role: str, content: str | list[Any]) -> None:
    # Anthropic requires alternating roles, so a run of same-role messages becomes one turn.
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] = _as_blocks(turns[-1]["content"]) + _as_blocks(content)
    else:
        turns.append({"role": role, "content": content})


def _as_blocks(content: str | list[Any]) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _plain_text(content: Any, where: str) -> str:
    """String content, or the text of an array of text parts (system and tool messages)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        _fail(where, "must be a string or an array of text parts")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            _fail(f"{where}[{j}].type", "only text parts are allowed here")
        if not isinstance(part.get("text"), str):
            _fail(f"{where}[{j}].text", "must be a string")
        texts.append(part["text"])
    return "\n".join(texts)


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        _fail(where, "must be a string or an array of content parts")
    blocks = (_content_part(part, f"{where}[{j}]") for j, part in enumerate(content))
    return [block for block in blocks if block is not None]


def _content_part(part: Any, where: str) -> dict[str, Any] | None:
    """One OpenAI content part -> one Anthropic block; None for empty text (Anthropic refuses)."""
    if not isinstance(part, dict):
        _fail(where, "must be an object with a type")
    kind = part.get("type")
    if kind in ("text", "refusal"):
        text = part.get(kind)
        if not isinstance(text, str):
            _fail(f"{where}.{kind}", "must be a string")
        return {"type": "text", "text": text} if text else None
    if kind == "image_url":
        return _image(part.get("image_url"), f"{where}.image_url")
    _fail(
        f"{where}.type",
        f"{kind!r} parts are not supported for Anthropic models; send text or image_url",
    )


def _image(spec: Any, where: str) -> dict[str, Any]:
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        _fail(f"{where}.url", "must be a string (an https URL or a base64 data URL)")
    if url.startswith("data:"):
        header, comma, data = url[len("data:") :].partition(",")
        media_type, *params = header.split(";")
        if not comma or "base64" not in params:
            _fail(f"{where}.url", "a data URL must be base64-encoded (data:image/png;base64,...)")
        if media_type not in _IMAGE_MEDIA_TYPES:
            allowed = ", ".join(sorted(_IMAGE_MEDIA_TYPES))
            _fail(f"{where}.url", f"image type {media_type!r} is not supported; use {allowed}")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url[:8].lower().startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    _fail(f"{where}.url", "must be an http(s) URL or a base64 data URL")


def _assistant_content(message: dict[str, Any], where: str) -> str | list[dict[str, Any]]:
    content, calls = message.get("content"), message.get("tool_calls")
    if not calls:
        if content is None:
            _fail(f"{where}.content", "an assistant message needs content or tool_calls")
        return _content(content, f"{where}.content")
    if not isinstance(calls, list):
        _fail(f"{where}.tool_calls", "must be an array of tool calls")
    blocks = [] if content is None else _as_blocks(_content(content, f"{where}.content"))
    return blocks + [_tool_use(call, f"{where}.tool_calls[{k}]") for k, call in enumerate(calls)]


def _tool_use(call: Any, where: str) -> dict[str, Any]:
    if not isinstance(call, dict):
        _fail(where, "must be an object with id, type and function")
    if call.get("type", "function") != "function":
        _fail(f"{where}.type", "only function tool calls are supported")
    if not isinstance(call.get("id"), str) or not call["id"]:
        _fail(f"{where}.id", "must be a non-empty string")
    function = call.get("function")
    if not isinstance(function, dict):
        _fail(f"{where}.function", "must be an object with name and arguments")
    if not isinstance(function.get("name"), str) or not function["name"]:
        _fail(f"{where}.function.name", "must be a non-empty string")
    arguments = _tool_arguments(function.get("arguments"), f"{where}.function.arguments")
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}


def _tool_arguments(raw: Any, where: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}  # a call of a tool without parameters; some clients send "" for it
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    _fail(where, "must be a JSON object encoded as a string, as the model produced it")


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    tool_use_id = message.get("tool_call_id")
    if not isinstance(tool_use_id, str) or not tool_use_id:
        _fail(f"{where}.tool_call_id", "must be the id of the assistant's tool call")
    text = _plain_text(message.get("content"), f"{where}.content")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if text:  # Anthropic rejects empty text but accepts a result without content
        result["content"] = text
    return result


def _max_tokens(body: dict[str, Any], max_output_tokens: int) -> int:
    # max_completion_tokens is OpenAI's newer name and wins when a client sends both.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if not _is_int(value) or value < 1:
                _fail(name, "must be a positive integer")
            return int(value)
    return (
        max_output_tokens
        if _is_int(max_output_tokens) and max_output_tokens > 0
        else DEFAULT_MAX_TOKENS
    )


def _finite_number(value: Any, name: str) -> float | int:
    if _is_int(value):
        return int(value)  # math.isfinite would overflow on an int too big for a float
    if not isinstance(value, float) or not math.isfinite(value):
        _fail(name, "must be a number")
    return value


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop] if stop else []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        _fail("stop", "must be a string or an array of strings")
    return [s for s in stop if s]


def _user_id(body: dict[str, Any]) -> str | None:
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        _fail("metadata", "must be an object of strings")
    if metadata and isinstance(metadata.get("user"), str) and metadata["user"]:
        return str(metadata["user"])
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        _fail("user", "must be a string")
    return user or None


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        _fail("tools", "must be an array of function tools")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            _fail(f"{where}.type", "only tools of type 'function' are supported")
        function = tool.get("function")
        if not isinstance(function, dict):
            _fail(f"{where}.function", "must be an object with a name")
        if not isinstance(function.get("name"), str) or not function["name"]:
            _fail(f"{where}.function.name", "must be a non-empty string")
        schema = function.get("parameters")
        if schema is None:
            schema = {"type": "object", "properties": {}}
        elif not isinstance(schema, dict):
            _fail(f"{where}.function.parameters", "must be a JSON Schema object")
        entry: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        description = function.get("description")
        if description is not None and not isinstance(description, str):
            _fail(f"{where}.function.description", "must be a string")
        if description:
            entry["description"] = description
        tools.append(entry)
    return tools


def _tool_choice(raw: Any, parallel: Any) -> dict[str, Any] | None:
    choice: dict[str, Any] | None
    if raw is None:
        choice = None
    elif raw in ("auto", "required", "none"):
        choice = {"type": {"auto": "auto", "required": "any", "none": "none"}[raw]}
    elif (
        isinstance(raw, dict)
        and raw.get("type") == "function"
        and isinstance(raw.get("function"), dict)
        and isinstance(raw["function"].get("name"), str)
    ):
        choice = {"type": "tool", "name": raw["function"]["name"]}
    else:
        _fail("tool_choice", 'must be "auto", "required", "none" or {"type": "function", ...}')
    if parallel is not None and not isinstance(parallel, bool):
        _fail("parallel_tool_calls", "must be true or false")
    if parallel is False and (choice is None or choice["type"] != "none"):
        choice = {"type": "auto"} if choice is None else choice
        choice["disable_parallel_tool_use"] = True
    return choice


def _response_format_instruction(raw: Any) -> str | None:
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return _JSON_INSTRUCTION
    if kind == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            return _JSON_INSTRUCTION
        try:
            text = orjson.dumps(schema).decode()
        except orjson.JSONEncodeError:
            _fail("response_format.json_schema.schema", "is too deeply nested or has huge numbers")
        return f"{_JSON_INSTRUCTION} It must conform to this JSON Schema: {text}"
    _fail("response_format.type", 'must be "text", "json_object" or "json_schema"')
