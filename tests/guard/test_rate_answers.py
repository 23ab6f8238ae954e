"""A rate-limited call's answer agrees with itself and with the sliding window, for any traffic
in the previous and the current minute: the use the message names and the remaining header add
up to the limit, the remaining header is less than the call needs, and the call fits again at
the time the answer gives (Retry-After and the reset header), not before. Both stores."""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import RATE_WINDOW_MS, Blocked, GuardStore, Reserved
from sluicegate.guard.rules import OrgRules
from sluicegate.proxy.guardrails import blocked, rate_headers
from tests.guard.stores import Org, Seeds
from tests.guard.test_store_contract import clock as clock  # the fixtures
from tests.guard.test_store_contract import store as store

RULES = OrgRules("org_rates", ZoneInfo("UTC"), False, {}, [], {}, {})
# The reset header: "20ms", "1.5s", "6m0s".
DURATION = re.compile(r"^(?:(\d+)m)?(?:([\d.]+)s|(\d+)ms)$")


def milliseconds(duration: str) -> float:
    match = DURATION.match(duration)
    assert match, duration
    minutes, seconds, millis = match.groups()
    return int(minutes or 0) * 60_000 + float(seconds or 0) * 1000 + int(millis or 0)


@st.composite
def traffic(draw: st.DrawFn) -> dict[str, int | bool]:
    per_token = draw(st.booleans())
    limit = draw(st.integers(1, 12)) if not per_token else draw(st.integers(10, 5_000))
    unit = 1 if not per_token else draw(st.integers(1, limit))
    return {
        "per_token": per_token,
        "limit": limit,
        # Calls of `unit` tokens (or one request each) in the previous minute and in this one.
        "unit": unit,
        "previous": draw(st.integers(0, limit // unit + 1)),
        "current": draw(st.integers(0, limit // unit + 1)),
        "elapsed_ms": draw(st.integers(0, RATE_WINDOW_MS - 1)),
        "want": 1 if not per_token else draw(st.integers(1, limit)),
    }


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=traffic())
async def test_a_rate_limited_answer_agrees_with_itself_and_with_the_window(
    store: GuardStore, clock: ManualClock, case: dict
) -> None:
    org = Org()
    per_token, limit, unit = case["per_token"], case["limit"], case["unit"]
    check = org.rate(limit, per_token=per_token)
    want = case["want"]

    def plan(tokens: int):  # type: ignore[no-untyped-def]
        return org.plan(0, check, tokens=tokens if per_token else 0)

    # To the start of a window, then the previous minute's calls; then into the next window.
    into = int(clock.now().timestamp() * 1000) % RATE_WINDOW_MS
    clock.advance((RATE_WINDOW_MS - into) / 1000)
    for _ in range(case["previous"]):
        await store.reserve(plan(unit), Seeds())
    clock.advance((RATE_WINDOW_MS + case["elapsed_ms"]) / 1000)
    for _ in range(case["current"]):
        await store.reserve(plan(unit), Seeds())

    result = await store.reserve(plan(want), Seeds())
    name = "tokens" if per_token else "requests"
    if isinstance(result, Reserved):
        remaining = int(rate_headers(result)[f"x-ratelimit-remaining-{name}"])
        assert 0 <= remaining <= limit - want
        return
    assert isinstance(result, Blocked) and result.check == check
    answer = blocked(result, RULES, 0, want)
    headers = answer.headers
    remaining = int(headers[f"x-ratelimit-remaining-{name}"])
    assert int(headers[f"x-ratelimit-limit-{name}"]) == limit
    assert remaining < want, "refused although the header says it fits"
    if result.retry_after_ms < 0:
        assert want > limit
        return
    used = re.search(r"and (\d+) were used in the last minute", answer.body["message"])
    assert used, answer.body["message"]
    assert int(used.group(1)) == limit - remaining or (
        remaining == 0 and int(used.group(1)) >= limit
    )
    reset_ms = milliseconds(headers[f"x-ratelimit-reset-{name}"])
    assert int(headers["retry-after"]) * 1000 >= reset_ms
    assert f"Try again in {headers['retry-after']} s." in answer.body["message"]
    if reset_ms >= 50:
        clock.advance((reset_ms - 50) / 1000)
        assert isinstance(await store.reserve(plan(want), Seeds()), Blocked), (
            "fits before the reset"
        )
        clock.advance(50 / 1000)
    else:
        clock.advance(reset_ms / 1000)
    assert isinstance(await store.reserve(plan(want), Seeds()), Reserved), "refused after the reset"
