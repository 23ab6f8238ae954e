"""The admin API's one error shape, `{"error": {"code", "message", "details"}}`, its OpenAPI
description, and the handlers that render every failure in it (never a bare traceback)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sluicegate.core.db import database_unavailable, describe_database_failure
from sluicegate.core.errors import DatabaseUnavailable, SluicegateError
from sluicegate.core.responses import JSONBody

log = logging.getLogger("sluicegate.api")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["group grp_01jd... not found"])
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


Responses = dict[int | str, dict[str, Any]]


def _described(status: int, text: str) -> Responses:
    return {status: {"model": ErrorBody, "description": text}}


UNAUTHENTICATED = _described(401, "No admin token, or one that is unknown, expired or revoked")
FORBIDDEN = _described(403, "The caller's role is too small for this, inside the same org")
NOT_FOUND = _described(404, "Unknown id, or an id of another organization")
CONFLICT = _described(409, "Conflicts with the current state (named in the message)")
INVALID = _described(422, "Invalid input; the message names the field and the rule")
UNAVAILABLE = _described(
    503, "The counter store (Redis) or the database is unavailable; retry shortly"
)

# What every authenticated, org-scoped route may answer besides success.
STANDARD_ERRORS: Responses = {
    **UNAUTHENTICATED,
    **FORBIDDEN,
    **NOT_FOUND,
    **INVALID,
}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SluicegateError, _render_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _render_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _render_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _render_integrity_error)  # type: ignore[arg-type]
    # What a database that refuses, drops or ignores connections raises (handled here, not as
    # an unexpected error: an outage is no bug, and deserves neither a 500 nor a traceback).
    for failure in (DBAPIError, SQLAlchemyTimeout, OSError, TimeoutError):
        app.add_exception_handler(failure, _render_database_failure)
    app.add_exception_handler(Exception, _render_unexpected)


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONBody(body, status_code=status)


async def _render_error(_request: Request, exc: SluicegateError) -> Response:
    return error_response(exc.status_code, exc.code, exc.message, exc.details)


async def _render_validation_error(_request: Request, exc: RequestValidationError) -> Response:
    problems = [
        {
            "field": _field_name(error["loc"]),
            "rule": str(error["msg"]).removeprefix("Value error, "),
        }
        for error in exc.errors()
    ]
    first = problems[0] if problems else {"field": "body", "rule": "invalid"}
    return error_response(
        422,
        "invalid_input",
        f"{first['field']}: {first['rule']}",
        {"field": first["field"], "errors": problems},
    )


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "timezone") -> "timezone"; ("query", "limit") -> "limit"; ("body",) -> "body"
    parts = [str(part) for part in location[1:]]
    return ".".join(parts) or str(location[0] if location else "body")


async def _render_http_error(_request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400:
        # FastAPI's answer to a body it cannot even decode (bytes that are not UTF-8): invalid
        # input like any other, in the one documented shape and status.
        return error_response(422, "invalid_input", f"body: {exc.detail}", {"field": "body"})
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
    )


async def _render_integrity_error(_request: Request, exc: IntegrityError) -> Response:
    # A uniqueness race the service's own check could not see (two requests at once).
    log.info("integrity error answered as a conflict: %s", exc.orig)
    return error_response(
        409, "conflict", "the change conflicts with another one made at the same time; retry"
    )


async def _render_database_failure(request: Request, exc: Exception) -> Response:
    if not database_unavailable(exc):
        return await _render_unexpected(request, exc)
    state = request.scope.get("state") or {}
    log.warning(
        "database unavailable: %s", describe_database_failure(exc), extra={"path": request.url.path}
    )
    return error_response(
        503,
        DatabaseUnavailable.code,
        "the database is unavailable; retry shortly",
        {"request_id": state.get("request_id")},
    )


async def _render_unexpected(request: Request, exc: Exception) -> Response:
    state = request.scope.get("state") or {}
    log.error("unexpected error in the admin API", exc_info=exc)
    return error_response(
        500,
        "internal_error",
        "the gateway failed unexpectedly; the request id identifies it in the gateway's logs",
        {"request_id": state.get("request_id")},
    )
