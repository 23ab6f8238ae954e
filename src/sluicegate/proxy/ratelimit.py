"""OpenAI's `x-ratelimit-*` headers, as answers and rate-limit refusals carry them."""

from __future__ import annotations


def limit_headers(
    unit: str, limit: int, remaining: int, reset_ms: int | None = None
) -> dict[str, str]:
    """The headers of one limit in `unit` ('requests' or 'tokens'); the reset one only when it is
    known when the limit lets a call through again."""
    headers = {
        f"x-ratelimit-limit-{unit}": str(limit),
        f"x-ratelimit-remaining-{unit}": str(max(0, remaining)),
    }
    if reset_ms is not None:
        headers[f"x-ratelimit-reset-{unit}"] = duration(reset_ms)
    return headers


def duration(milliseconds: int) -> str:
    """OpenAI's reset format: '20ms', '1.5s', '6m0s'."""
    if milliseconds < 1000:
        return f"{max(0, milliseconds)}ms"
    minutes, rest = divmod(milliseconds, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
