"""Proxy errors, always rendered in OpenAI's shape so SDKs show them as they would OpenAI's own:
`{"error": {"message", "type", "param", "code"}}`. The proxy's own refusals are declared in
proxy/refusals.py; only upstream errors passed through are built here (from_body)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ProxyError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "type": type, "param": param, "code": code}
        self.headers = headers or {}
        # What the usage event records; defaults to the OpenAI code or type.
        self.error_type = error_type or code or type

    @classmethod
    def from_body(
        cls,
        status: int,
        body: dict[str, Any],
        *,
        headers: dict[str, str] | None = None,
        error_type: str,
    ) -> ProxyError:
        error = cls(status, str(body.get("message", "")), headers=headers, error_type=error_type)
        error.body = body
        return error

    def response(self) -> Response:
        return Response(
            orjson.dumps({"error": self.body}),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )

    def sse_event(self) -> bytes:
        """The error as a final SSE event, for a stream that already started."""
        return b"data: " + orjson.dumps({"error": self.body}) + b"\n\n"
