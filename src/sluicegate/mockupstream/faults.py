"""The mock upstream's error answers: status, body and Retry-After, OpenAI- or Anthropic-shaped."""

from __future__ import annotations

from sluicegate.mockupstream.handlers import anthropic_error, openai_error

ERRORS = ("error-500", "error-429", "error-503", "error-context", "error")
RETRYABLE = ("error-429", "error-503", "error")  # the behaviours that take a Retry-After
DEFAULT_RETRY_AFTER = "2"
DEFAULT_ERROR_STATUS = 500  # the generic "error" without a status
MIN_ERROR_STATUS, MAX_ERROR_STATUS = 400, 599
# error-context reports a gpt-4o-sized window and a prompt one token over it.
CONTEXT_WINDOW = 128_000
ANTHROPIC_CONTEXT_WINDOW = 200_000

_FIXED_STATUS = {"error-500": 500, "error-429": 429, "error-503": 503, "error-context": 400}
_ANTHROPIC_KIND = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_MESSAGES = {
    500: "The mock upstream had an error while processing your request.",
    429: "Rate limit reached for mock upstream.",
    503: "The mock upstream is overloaded, please try again later.",
}
_CONTEXT_MESSAGE = (
    f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, your messages "
    f"resulted in {CONTEXT_WINDOW + 1} tokens. Please reduce the length of the messages."
)
_ANTHROPIC_CONTEXT_MESSAGE = (
    f"prompt is too long: {ANTHROPIC_CONTEXT_WINDOW + 1} tokens > "
    f"{ANTHROPIC_CONTEXT_WINDOW} maximum"
)


def status_of(behavior: str, status: int | None) -> int:
    """The status an error behaviour answers with; ``status`` is the generic error's own."""
    return _FIXED_STATUS.get(behavior) or status or DEFAULT_ERROR_STATUS


def retry_after_of(behavior: str, retry_after: str | None) -> str | None:
    """The Retry-After an error behaviour sends: a default for 429 and 503, the generic error's
    only when asked, none for the others."""
    if behavior not in RETRYABLE:
        return None
    if retry_after is None and behavior != "error":
        return DEFAULT_RETRY_AFTER
    return retry_after


def _openai_kind(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(behavior: str, status: int, anthropic: bool, prompt_field: str) -> bytes:
    """The body of an error behaviour; ``prompt_field`` is the field error-context blames."""
    if behavior == "error-context":
        if anthropic:
            return anthropic_error(_ANTHROPIC_CONTEXT_MESSAGE, "invalid_request_error")
        return openai_error(
            _CONTEXT_MESSAGE, "invalid_request_error", "context_length_exceeded", prompt_field
        )
    message = _MESSAGES.get(status) or f"The mock upstream answered {status} as programmed."
    if anthropic:
        kind = _ANTHROPIC_KIND.get(status) or (
            "api_error" if status >= 500 else "invalid_request_error"
        )
        return anthropic_error(message, kind)
    return openai_error(
        message, _openai_kind(status), "rate_limit_exceeded" if status == 429 else None
    )
