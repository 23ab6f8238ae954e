"""Structured JSON logs, one object per line, each carrying the current request id."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

# Set by the request middleware for the duration of a request; read by every log line.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
# uvicorn adds an ANSI-coloured copy of its messages; JSON readers want the plain one only.
_IGNORED_ATTRIBUTES = _STANDARD_ATTRIBUTES | {"color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _IGNORED_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "info") -> None:
    """Send our logs and uvicorn's through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # The request middleware writes its own access line with the request id and route.
    logging.getLogger("uvicorn.access").disabled = True
    # Alembic narrates its plugin set-up at INFO; the CLI reports the revision reached instead.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # httpx logs each outbound request's full URL; a webhook's path is a credential.
    outbound = logging.getLogger("httpx")
    if not any(isinstance(f, OriginOnly) for f in outbound.filters):
        outbound.addFilter(OriginOnly())


class OriginOnly(logging.Filter):
    """Outbound URLs in log lines as scheme, host and port only: paths and queries of webhooks
    and providers may hold credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        import httpx

        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, httpx.URL) for arg in args):
            record.args = tuple(_origin(arg) if isinstance(arg, httpx.URL) else arg for arg in args)
        return True


def _origin(url: Any) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}"


def log_failure(logger: logging.Logger, message: str, exc: BaseException, **extra: Any) -> None:
    """A failed step of background work. A dependency that is down (the database unreachable or
    silent, Redis gone) is an outage, not a bug: one line at warning naming the cause, since it
    repeats every retry until the dependency is back. Anything else at error, with its
    traceback."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    from sluicegate.core.db import database_unavailable, describe_database_failure

    if database_unavailable(exc):
        cause = f"the database is unavailable ({describe_database_failure(exc)})"
    elif isinstance(exc, (RedisConnectionError, RedisTimeout)):
        cause = f"Redis is unavailable ({str(exc).splitlines()[0] if str(exc) else 'no answer'})"
    else:
        logger.error(message, exc_info=exc, extra=extra)
        return
    logger.warning("%s: %s", message, cause, extra=extra)
