"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Together, DeepSeek, Mistral,
OpenRouter), and Azure OpenAI, which speaks the same bodies on different URLs and headers.

Bodies pass through untouched but for the model name and, on streams, a request for usage;
responses pass through byte for byte, read only for their usage.
"""

from __future__ import annotations

from typing import Any

import orjson

from sluicegate.providers.base import Endpoint, UpstreamCall, Usage, json_answer
from sluicegate.providers.config import ModelRoute, ProviderConfig

DEFAULT_AZURE_API_VERSION = "2024-10-21"
_DATA = b"data:"
_DONE = b"[DONE]"
_USAGE = b'"usage"'
_NULL_USAGE = (b'"usage":null', b'"usage": null')
# A streamed delta carrying text or tool-call arguments is about one token.
_TEXT_MARKERS = (b'"content":"', b'"arguments":"', b'"text":"')
_EMPTY_TEXT = (b'"content":""', b'"arguments":""', b'"text":""')


def usage_from(document: Any) -> Usage | None:
    """OpenAI's usage object -> Usage; None when absent or malformed."""
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(prompt, completion or 0, cached if isinstance(cached, int) else 0)


def openai_error_body(status: int, content: bytes) -> dict[str, Any]:
    """The upstream's own OpenAI-shaped error when it sent one, else a generic one."""
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        document = None
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return {
            "message": error["message"],
            "type": error.get("type") or "upstream_error",
            "param": error.get("param"),
            "code": error.get("code"),
        }
    text = content[:300].decode("utf-8", "replace").strip() or "no body"
    return {
        "message": f"upstream answered {status}: {text}",
        "type": "upstream_error",
        "param": None,
        "code": None,
    }


class OpenAIStreamReader:
    """Passes SSE events through; reads usage from the last chunk and strips that chunk when
    the client did not ask for usage (the gateway asked on its own account)."""

    __slots__ = ("_buffer", "_include_usage", "_text_chunks", "usage")

    def __init__(self, include_usage: bool) -> None:
        self._include_usage = include_usage
        self._buffer = b""
        self._text_chunks = 0
        self.usage: Usage | None = None

    @property
    def estimated_completion_tokens(self) -> int:
        return self._text_chunks

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data
        if b"\r\n" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        cut = buffer.rfind(b"\n\n")
        if cut < 0:
            self._buffer = buffer
            return b""
        self._buffer = buffer[cut + 2 :]
        complete = buffer[: cut + 2]
        if _USAGE not in complete and not any(marker in complete for marker in _TEXT_MARKERS):
            return complete
        kept = [self._event(event) for event in complete.split(b"\n\n") if event]
        return b"".join(event + b"\n\n" for event in kept if event)

    def _event(self, event: bytes) -> bytes:
        if any(m in event for m in _TEXT_MARKERS) and not any(e in event for e in _EMPTY_TEXT):
            self._text_chunks += 1
        if _USAGE not in event or any(null in event for null in _NULL_USAGE):
            return event
        payload = event[len(_DATA) :].strip() if event.startswith(_DATA) else b""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        usage = usage_from(chunk)
        if usage is None:
            return event
        self.usage = usage
        if self._include_usage:
            return event
        if not chunk.get("choices"):
            return b""  # the usage-only chunk the client never asked for
        del chunk["usage"]
        return _DATA + b" " + orjson.dumps(chunk)

    def finish(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


class OpenAIAdapter:
    """Any server that speaks OpenAI's API at `base_url` (which includes /v1)."""

    def __init__(self, provider: ProviderConfig) -> None:
        self.provider = provider
        self._headers = {"content-type": "application/json", **dict(provider.headers)}
        if provider.api_key:
            self._headers["authorization"] = f"Bearer {provider.api_key}"

    def url(self, endpoint: Endpoint, route: ModelRoute) -> str:
        return f"{self.provider.base_url}/{endpoint.value}"

    def prepare(
        self, endpoint: Endpoint, body: dict[str, Any], route: ModelRoute, stream: bool
    ) -> UpstreamCall:
        body["model"] = route.upstream_model
        if stream:
            options = body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        return UpstreamCall(self.url(endpoint, route), self._headers, orjson.dumps(body))

    def read(
        self, endpoint: Endpoint, content: bytes, route: ModelRoute
    ) -> tuple[bytes, Usage | None]:
        return content, usage_from(json_answer(content))

    def error_body(self, status: int, content: bytes) -> dict[str, Any]:
        return openai_error_body(status, content)

    def stream_reader(
        self, endpoint: Endpoint, route: ModelRoute, include_usage: bool
    ) -> OpenAIStreamReader:
        return OpenAIStreamReader(include_usage)


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: the route's upstream model names the deployment; `api-key` authenticates."""

    def __init__(self, provider: ProviderConfig) -> None:
        super().__init__(provider)
        self._headers.pop("authorization", None)
        if provider.api_key:
            self._headers["api-key"] = provider.api_key
        self._version = provider.api_version or DEFAULT_AZURE_API_VERSION

    def url(self, endpoint: Endpoint, route: ModelRoute) -> str:
        return (
            f"{self.provider.base_url}/openai/deployments/{route.upstream_model}/"
            f"{endpoint.value}?api-version={self._version}"
        )
