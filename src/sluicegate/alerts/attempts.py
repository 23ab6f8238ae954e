"""What every delivery attempt shares, whether HTTP or SMTP carries it: its time limit, the
headers that name it, and its verdict (delivered, retry later, failed for good) with the
receiver's status or reply code and the reason in words."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

# Everything of one attempt (resolve or connect, send, the answer) within this; a receiver that
# is slower is retried later rather than holding the worker.
SEND_TIMEOUT_SECONDS = 10.0
# The delivery log keeps this much error text per attempt (the column's size).
ERROR_CHARS = 500
# On every request and every mail: the delivery (the same on each attempt) and the event.
DELIVERY_HEADER = "X-Sluicegate-Delivery"
EVENT_HEADER = "X-Sluicegate-Event"

Verdict = Literal["delivered", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    verdict: Verdict
    # The receiver's HTTP status, or the SMTP server's reply code; None: no answer.
    status_code: int | None
    error: str | None
    duration_ms: int
    # A 429's Retry-After, in seconds from now.
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.verdict == "delivered"


def cut(text: str, limit: int = ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result(
    verdict: Verdict,
    status: int | None,
    error: str | None,
    started: float,
    retry_after: float | None = None,
) -> SendResult:
    """The verdict of an attempt that began at `started` (time.perf_counter())."""
    # Real elapsed time, not the injectable clock: this measures the receiver, not the schedule.
    duration = int((time.perf_counter() - started) * 1000)
    return SendResult(verdict, status, cut(error) if error else None, duration, retry_after)


def failed(error: str, started: float) -> SendResult:
    return result("failed", None, error, started)
