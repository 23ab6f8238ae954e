"""Raw-ASGI mock of the OpenAI and Anthropic HTTP APIs, cheap enough to sit behind a benchmark.

Routes: GET /health; GET /v1/models[/{id}]; POST /v1/chat/completions, /v1/completions,
/v1/embeddings, /v1/messages (Anthropic); Azure-shaped POST
/openai/deployments/{d}/(chat/completions|completions|embeddings) (model defaults to the deployment,
query ignored). Anything else is 404; a malformed or non-object JSON body is 400 (errors are
OpenAI-shaped, Anthropic-shaped on /v1/messages). Usage follows sluicegate.mockupstream.tokens; tool
calls are returned when `tools` is non-empty, tool_choice is not none and the last message is not a
tool result; response_format json_object/json_schema yields a JSON object string. Streams are SSE,
one ASGI body message per chunk (role chunk, a chunk per word, finish chunk, usage chunk if
stream_options.include_usage, [DONE]). Request headers: x-mock-completion-tokens,
x-mock-cached-tokens, x-mock-stream-delay-ms (pause between stream chunks).

Behaviours. An API call's behaviour is the first of: its header x-mock-behavior ("normal" for
none), its model if named "mock-<behavior>", the programmed rules (below), normal. error-500;
error-429 and error-503 (Retry-After from x-mock-retry-after, default 2; Anthropic types
rate_limit_error, overloaded_error); error-context (400, OpenAI's context_length_exceeded with param
the prompt's field, or Anthropic's "prompt is too long"); error (status from x-mock-status, 400-599,
default 500; Retry-After only if x-mock-retry-after is sent); slow (x-mock-delay-ms, default 2000,
before the first byte); cut (connection dropped mid-body); invalid-json (truncated 200 body);
no-usage (no usage anywhere). Errors answer before any stream byte.

Control routes (/_mock/*, like /health, neither logged nor counted). PUT /_mock/behavior
{"behavior", "times"?, "model"?, "retry_after"?, "delay_ms"?, "status"?} adds a server-wide rule and
answers {"rule": {...}}: behavior is one of the above or "normal"; times (>= 1) limits the rule to
the next N calls it is applied to, then it is gone (without: until cleared); model limits it to
calls for that model (on Azure paths the deployment, unless the body names a model); retry_after is
for error-429, error-503 and error, delay_ms for slow, status for error. A call takes the most
recent rule for its model, else the most recent rule without a model; a call that chose its own
behaviour takes none and spends no count. Counts are exact under any concurrency. A refused rule is
a 400 whose error.param names the field. GET /_mock/behavior lists {"rules": [{"id", "behavior",
"model", "times", "remaining", "retry_after", "delay_ms", "status"}]} in that order; DELETE clears
them, as {"cleared": n}. GET /_mock/requests lists the last 200 requests as {"method", "path",
"query", "headers", "body"}; GET /_mock/stats counts since start as {"requests": n, "by_model":
{model: n}, "by_status": {"200": n, ...}} (by_model: API calls with a JSON object body; a cut counts
as its 200); DELETE on either starts it afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

from sluicegate.mockupstream import control as ctl
from sluicegate.mockupstream import faults
from sluicegate.mockupstream import handlers as h

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
LogEntry = tuple[str, str, bytes, Headers, Any]  # method, path, query, headers, parsed body

BEHAVIORS = ctl.BEHAVIORS
MODEL_IDS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "text-embedding-3-small",
    "claude-3-5-haiku-latest",
    "mock-model",
)
LOG_SIZE = 200

_MODEL_BEHAVIOR = {f"mock-{b}": b for b in BEHAVIORS}
_ERRORS = frozenset(faults.ERRORS)
_NO_BEHAVIOR = frozenset({"normal", "none", ""})
_CREATED = 1700000000
_JSON_CT = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_HEALTH = b'{"status":"ok"}'
_BROKEN = b'{"id": "chatcmpl-broken", "choices": ['
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": _CREATED, "owned_by": "mock"} for m in MODEL_IDS
        ],
    }
)
_AZURE_PREFIX = "/openai/deployments/"


class MockCutError(RuntimeError):
    """Raised on purpose after a partial body so that the server drops the connection."""


class _CutLogFilter(logging.Filter):
    """Keeps deliberate cuts out of uvicorn's error log: they are not failures of the mock."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], MockCutError))


_CUT_FILTER = _CutLogFilter()


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Callable[[h.ApiCall], h.Result]
    anthropic: bool  # error bodies in Anthropic's shape
    cut_after: int  # stream chunks sent before a deliberate cut
    prompt_field: str  # the field error-context blames


_CHAT = _Route(h.chat_completions, False, 3, "messages")  # role chunk + two words
_COMPLETIONS = _Route(h.completions, False, 2, "prompt")  # two words
_EMBEDDINGS = _Route(h.embeddings, False, 0, "input")
_ROUTES = {
    "/v1/chat/completions": _CHAT,
    "/v1/completions": _COMPLETIONS,
    "/v1/embeddings": _EMBEDDINGS,
    # message_start, content_block_start, ping, two deltas
    "/v1/messages": _Route(h.messages, True, 5, "messages"),
}
_AZURE_ROUTES = {"chat/completions": _CHAT, "completions": _COMPLETIONS, "embeddings": _EMBEDDINGS}


def _error(anthropic: bool, message: str, kind: str, code: str | None = None) -> bytes:
    if anthropic:
        return h.anthropic_error(message, kind)
    return h.openai_error(message, kind, code)


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes, extra: Headers | None = None) -> int:
    headers = [_JSON_CT, (b"content-length", b"%d" % len(body))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_stream(send: Send, chunks: list[bytes], cut_after: int | None, delay: float) -> int:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    # Each chunk is its own body message so that clients see real streaming.
    partial = chunks[:-1] if cut_after is None else chunks[: min(cut_after, len(chunks) - 1)]
    for i, chunk in enumerate(partial):
        if delay and i:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    if cut_after is not None:
        raise MockCutError("mock upstream cut the stream on purpose")
    if delay:
        await asyncio.sleep(delay)
    await send({"type": "http.response.body", "body": chunks[-1]})
    return 200


async def _send_cut(send: Send, body: bytes) -> NoReturn:
    # A content-length beyond what is sent makes the client see an incomplete body, not a
    # short but valid one.
    headers = [_JSON_CT, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise MockCutError("mock upstream cut the response on purpose")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _entry_json(entry: LogEntry) -> dict[str, Any]:
    method, path, query, raw_headers, body = entry
    headers: dict[str, str] = {}
    for key, value in raw_headers:
        name, text = key.decode("latin-1").lower(), value.decode("latin-1")
        headers[name] = f"{headers[name]}, {text}" if name in headers else text
    return {
        "method": method,
        "path": path,
        "query": query.decode("latin-1"),
        "headers": headers,
        "body": body,
    }


def _error_answer(
    route: _Route, behavior: str, rule: ctl.Rule | None, call: h.ApiCall
) -> tuple[int, bytes, Headers | None]:
    """Status, body and extra headers of an error behaviour, from the rule or the headers."""
    if rule is None:
        asked = call.header_int("x-mock-status") if behavior == "error" else None
        retry_after = call.mock.get("x-mock-retry-after")
    else:
        asked, retry_after = rule.status, rule.retry_after
    if asked is not None and not faults.MIN_ERROR_STATUS <= asked <= faults.MAX_ERROR_STATUS:
        low, high = faults.MIN_ERROR_STATUS, faults.MAX_ERROR_STATUS
        raise h.BadRequestError(f"x-mock-status must be from {low} to {high}, not {asked}")
    status = faults.status_of(behavior, asked)
    retry = faults.retry_after_of(behavior, retry_after)
    body = faults.error_body(behavior, status, route.anthropic, route.prompt_field)
    return status, body, None if retry is None else [(b"retry-after", retry.encode("latin-1"))]


def _not_found(method: str, path: str) -> bytes:
    message = f"Unknown request URL: {method} {path}"
    return _error(False, message, "invalid_request_error", "not_found")


class MockUpstreamApp:
    """The ASGI callable; ``requests()``, ``rules`` and ``stats`` serve in-process users too."""

    def __init__(self, log_size: int = LOG_SIZE) -> None:
        # Only references are stored per request; decoding waits until someone reads the log.
        self.log: deque[LogEntry] = deque(maxlen=log_size)
        self.rules = ctl.Rules()
        self.stats = ctl.Stats()

    def requests(self) -> list[dict[str, Any]]:
        return [_entry_json(e) for e in self.log]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        raw = await _read_body(receive)
        if path == "/health":
            await _respond(send, 200, _HEALTH)
            return
        if path.startswith("/_mock/"):
            await self._control(method, path, raw, send)
            return
        body: Any = None
        malformed = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                malformed = True
        self.log.append((method, path, scope["query_string"], scope["headers"], body))
        stats = self.stats
        stats.requests += 1
        try:
            status = await self._answer(method, path, scope, body, malformed, send)
        except MockCutError:
            stats.answered(200)  # the head went out before the deliberate cut
            raise
        stats.answered(status)

    async def _answer(
        self, method: str, path: str, scope: Scope, body: Any, malformed: bool, send: Send
    ) -> int:
        deployment = None
        route = _ROUTES.get(path) if method == "POST" else None
        if route is None and method == "POST" and path.startswith(_AZURE_PREFIX):
            deployment, _, operation = path[len(_AZURE_PREFIX) :].partition("/")
            route = _AZURE_ROUTES.get(operation) if deployment else None
        if route is None:
            if method == "GET" and (path == "/v1/models" or path.startswith("/v1/models/")):
                return await self._models(path, send)
            return await _respond(send, 404, _not_found(method, path))
        if malformed or not isinstance(body, dict):
            message = "Request body is not valid JSON" if malformed else "Body must be an object"
            return await _respond(
                send, 400, _error(route.anthropic, message, "invalid_request_error", "invalid_json")
            )
        try:
            return await self._serve(route, body, scope["headers"], deployment, send)
        except h.BadRequestError as exc:
            error = _error(route.anthropic, str(exc), "invalid_request_error")
            return await _respond(send, 400, error)

    async def _serve(
        self,
        route: _Route,
        body: dict[str, Any],
        headers: Headers,
        deployment: str | None,
        send: Send,
    ) -> int:
        mock = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k.startswith(b"x-mock-")
        }
        model = body.get("model")
        if not isinstance(model, str):
            model = deployment or "mock-model"
        by_model = self.stats.by_model
        by_model[model] = by_model.get(model, 0) + 1
        # The behaviour is chosen, and a rule's count spent, before the first await.
        rule = None
        behavior = mock.get("x-mock-behavior")
        if behavior is None:
            behavior = _MODEL_BEHAVIOR.get(model)
            if behavior is None and self.rules.active:
                rule = self.rules.take(model)
                if rule is not None and rule.behavior != "normal":
                    behavior = rule.behavior
        elif behavior in _NO_BEHAVIOR:
            behavior = None
        elif behavior not in BEHAVIORS:
            raise h.BadRequestError(
                f"unknown x-mock-behavior {behavior!r}; expected one of {', '.join(BEHAVIORS)}"
            )
        call = h.ApiCall(body, mock, model, behavior == "no-usage")
        if behavior == "slow":
            delay_ms = rule.delay_ms if rule is not None else call.header_int("x-mock-delay-ms")
            await asyncio.sleep((ctl.DEFAULT_DELAY_MS if delay_ms is None else delay_ms) / 1000)
        elif behavior in _ERRORS:
            return await _respond(send, *_error_answer(route, behavior, rule, call))
        elif behavior == "invalid-json":
            return await _respond(send, 200, _BROKEN)
        result = route.handler(call)
        cut = behavior == "cut"
        if isinstance(result, list):
            delay_ms = call.header_int("x-mock-stream-delay-ms") or 0
            return await _send_stream(
                send, result, route.cut_after if cut else None, delay_ms / 1000
            )
        data = orjson.dumps(result)
        if cut:
            await _send_cut(send, data)  # raises MockCutError
        return await _respond(send, 200, data)

    async def _control(self, method: str, path: str, raw: bytes, send: Send) -> None:
        """The /_mock/* routes: the request log, the programmed rules, the counters."""
        answer: dict[str, Any] | None = None
        if path == "/_mock/requests":
            if method == "GET":
                answer = {"requests": self.requests()}
            elif method == "DELETE":
                cleared = len(self.log)
                self.log.clear()
                answer = {"cleared": cleared}
        elif path == "/_mock/behavior":
            if method == "GET":
                answer = self.rules.as_json()
            elif method == "PUT":
                return await self._put_rule(raw, send)
            elif method == "DELETE":
                answer = {"cleared": self.rules.clear()}
        elif path == "/_mock/stats":
            if method == "GET":
                answer = self.stats.as_json()
            elif method == "DELETE":
                answer = {"cleared": self.stats.clear()}
        if answer is None:
            await _respond(send, 404, _not_found(method, path))
        else:
            await _respond(send, 200, orjson.dumps(answer))

    async def _put_rule(self, raw: bytes, send: Send) -> None:
        try:
            rule = self.rules.add(orjson.loads(raw) if raw else None)
        except orjson.JSONDecodeError:
            message = 'The body must be a JSON object such as {"behavior": "error-500"}'
            error = h.openai_error(message, "invalid_request_error", "invalid_json")
            await _respond(send, 400, error)
            return
        except ctl.RuleError as exc:
            error = h.openai_error(str(exc), "invalid_request_error", "invalid_rule", exc.param)
            await _respond(send, 400, error)
            return
        await _respond(send, 200, orjson.dumps({"rule": rule.as_json()}))

    async def _models(self, path: str, send: Send) -> int:
        if path == "/v1/models":
            return await _respond(send, 200, _MODELS)
        model_id = path[len("/v1/models/") :]
        return await _respond(
            send,
            200,
            orjson.dumps(
                {"id": model_id, "object": "model", "created": _CREATED, "owned_by": "mock"}
            ),
        )


def create_mock_app(log_size: int = LOG_SIZE) -> MockUpstreamApp:
    """A fresh mock upstream ASGI app with its own empty request log."""
    logging.getLogger("uvicorn.error").addFilter(_CUT_FILTER)
    return MockUpstreamApp(log_size)


app = create_mock_app()
