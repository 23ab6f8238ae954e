"""One error hierarchy: each type carries its HTTP status and stable code for one handler."""

from __future__ import annotations

from typing import Any


class SluicegateError(Exception):
    """Base of every error we raise on purpose. The message is meant for a person to act on."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class Unauthenticated(SluicegateError):
    status_code = 401
    code = "unauthenticated"


class AccountFrozen(Unauthenticated):
    code = "account_frozen"


class PermissionDenied(SluicegateError):
    status_code = 403
    code = "permission_denied"


class NotFound(SluicegateError):
    status_code = 404
    code = "not_found"


class Conflict(SluicegateError):
    status_code = 409
    code = "conflict"


class InvalidInput(SluicegateError):
    status_code = 422
    code = "invalid_input"


class ServiceUnavailable(SluicegateError):
    status_code = 503
    code = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """The database refused, dropped or did not answer a call in time."""

    code = "database_unavailable"


class ConfigurationError(Exception):
    """A setting that stops start-up. Rendered by the CLI as one line, never a traceback."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
