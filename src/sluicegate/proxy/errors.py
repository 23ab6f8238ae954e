"""Proxy errors, always rendered in OpenAI's shape so SDKs show them as they would OpenAI's own:
`{"error": {"message", "type", "param", "code"}}`."""

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


def bad_request(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, error_type="invalid_request")


def unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, type="authentication_error", code="invalid_api_key")


def forbidden(message: str, code: str) -> ProxyError:
    return ProxyError(403, message, type="permission_error", code=code)


def database_unavailable() -> ProxyError:
    return ProxyError(
        503,
        "The gateway cannot reach its database to check this key or its guardrails; retry "
        "shortly. Keys and rules it checked in the last minutes keep working meanwhile.",
        type="server_error",
        code="database_unavailable",
        headers={"retry-after": "1"},
    )
