"""Deployment health: failures within a window cool a deployment down, Retry-After lengthens the
cooldown, one request probes it afterwards, and every board learns of cooldowns and recoveries.
Each behaviour on one process (the in-process bus) and across processes sharing Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from sluicegate.core.clock import ManualClock
from sluicegate.core.invalidation import (
    InvalidationBus,
    MemoryInvalidationBus,
    RedisInvalidationBus,
)
from sluicegate.routing.health import HEALTH_TOPIC, HealthBoard, HealthRules, retry_after_seconds
from sluicegate.runtime import connect_redis
from tests.routing.builders import memory_board

DEPLOYMENT = "azure-eu"
RULES = HealthRules(
    allowed_fails=3,
    window_seconds=60,
    cooldown_seconds=30,
    max_cooldown_seconds=600,
    probe_timeout_seconds=60,
)
# How long a board may take to hear of another's announcement through Redis.
DELIVERY_TIMEOUT = 20.0  # a bound for a busy machine; delivery takes milliseconds
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@dataclass
class Boards:
    """Two boards as two processes would hold them, on one clock."""

    clock: ManualClock
    first: HealthBoard
    second: HealthBoard
    first_bus: InvalidationBus
    shared_redis: bool

    def now(self) -> int:
        return self.first.now_ms()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait for an announcement to reach the other board (at once on one bus)."""
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            while not condition():
                await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def open_boards(redis_url: str | None) -> AsyncIterator[Boards]:
    """Two boards of one process on the in-process bus, or (with a Redis URL) of two processes
    sharing Redis, each with its own client and bus, under a prefix of this test alone."""
    clock = ManualClock()
    if redis_url is None:
        bus = MemoryInvalidationBus()
        first, second = HealthBoard(RULES, clock, bus), HealthBoard(RULES, clock, bus)
        bus.subscribe(first.on_message)
        bus.subscribe(second.on_message)
        yield Boards(clock, first, second, bus, shared_redis=False)
        return
    prefix = f"sgtest-{uuid.uuid4().hex}"
    clients: list[Redis] = [connect_redis(redis_url, pool_size=16) for _ in range(2)]
    buses = [RedisInvalidationBus(client, prefix) for client in clients]
    made = [HealthBoard(RULES, clock, bus, client, prefix) for bus, client in zip(buses, clients)]
    try:
        for bus, board in zip(buses, made):
            bus.subscribe(board.on_message)
            await bus.start()
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            for bus in buses:
                await bus.subscribed.wait()
        yield Boards(clock, made[0], made[1], buses[0], shared_redis=True)
    finally:
        for bus in buses:
            await bus.close()
        keys = [key async for key in clients[0].scan_iter(match=f"{prefix}:*")]
        if keys:
            await clients[0].delete(*keys)
        for client in clients:
            await client.aclose()


@pytest.fixture(params=["one process", "processes sharing redis"])
async def boards(request: pytest.FixtureRequest) -> AsyncIterator[Boards]:
    shared = request.param == "processes sharing redis"
    async with open_boards(request.getfixturevalue("redis_url") if shared else None) as made:
        yield made


@pytest.fixture
async def boards_sharing_redis(redis_url: str) -> AsyncIterator[Boards]:
    async with open_boards(redis_url) as made:
        yield made


@pytest.fixture
async def boards_of_one_process() -> AsyncIterator[Boards]:
    async with open_boards(None) as made:
        yield made


async def fail(board: HealthBoard, times: int, retry_after: float | None = None) -> list[bool]:
    return [await board.failed(DEPLOYMENT, retry_after) for _ in range(times)]


async def cool(boards: Boards) -> None:
    """Cool the deployment down on the first board; the second hears of it."""
    assert await fail(boards.first, RULES.allowed_fails) == [False, False, True]
    await boards.until(lambda: boards.second.on_probation(DEPLOYMENT))


# --- cooling down ---------------------------------------------------------------------------


async def test_allowed_fails_failures_within_the_window_cool_the_deployment(boards: Boards) -> None:
    board, clock = boards.first, boards.clock
    assert await board.failed(DEPLOYMENT) is False
    clock.advance(20)
    assert await board.failed(DEPLOYMENT) is False
    assert board.all_healthy
    clock.advance(20)
    assert await board.failed(DEPLOYMENT) is True
    assert board.cooling_until(DEPLOYMENT, boards.now()) == boards.now() + 30_000
    assert not board.all_healthy
    await boards.until(lambda: boards.second.cooling_until(DEPLOYMENT, boards.now()) is not None)
    assert boards.second.cooling_until(DEPLOYMENT, boards.now()) == boards.now() + 30_000


async def test_failures_of_one_deployment_do_not_cool_another(boards: Boards) -> None:
    await cool(boards)
    assert boards.first.cooling_until("openai-us", boards.now()) is None
    assert not boards.first.on_probation("openai-us")


def test_failures_spread_wider_than_the_window_do_not_cool() -> None:
    clock = ManualClock()
    board = memory_board(clock, RULES)
    for _ in range(10):
        assert run(board.failed(DEPLOYMENT)) is False
        clock.advance(RULES.window_seconds / (RULES.allowed_fails - 1) + 1)
    assert board.all_healthy


@given(
    allowed=st.integers(1, 5),
    gaps=st.lists(st.floats(0, 200, allow_nan=False), min_size=1, max_size=12),
)
def test_a_deployment_cools_exactly_when_allowed_fails_fit_in_the_window(
    allowed: int, gaps: list[float]
) -> None:
    """Counted on one process: the failure that makes `allowed` since the last recovery, all
    within the window, cools the deployment."""
    clock = ManualClock()
    rules = HealthRules(allowed_fails=allowed, window_seconds=60, cooldown_seconds=1)
    board = memory_board(clock, rules)
    counted: list[int] = []
    for gap in gaps:
        clock.advance(gap)
        now = board.now_ms()
        counted = [t for t in counted if t > now - 60_000] + [now]
        expected = len(counted) >= allowed
        assert run(board.failed(DEPLOYMENT)) is expected
        if expected:
            counted = []
            run(board.succeeded(DEPLOYMENT))  # recovered: the count starts again


# --- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "cooldown"),
    [(None, 30), (5, 30), (30, 30), (120, 120), (599.5, 599.5), (86_400, 600)],
)
async def test_a_retry_after_longer_than_the_cooldown_lengthens_it_up_to_the_cap(
    boards: Boards, retry_after: float | None, cooldown: float
) -> None:
    await fail(boards.first, RULES.allowed_fails - 1)
    assert await boards.first.failed(DEPLOYMENT, retry_after) is True
    assert boards.first.cooling_until(DEPLOYMENT, boards.now()) == boards.now() + cooldown * 1000


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        ("0", 0.0),
        (None, None),
        ("", None),
        ("-1", None),
        ("inf", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
    ],
)
def test_retry_after_is_believed_in_seconds_only(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


# --- the probe ----------------------------------------------------------------------------


async def test_the_cooldown_lasts_its_length_and_then_the_deployment_awaits_its_probe(
    boards: Boards,
) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds - 0.001)
    for board in (boards.first, boards.second):
        assert board.cooling_until(DEPLOYMENT, boards.now()) is not None
    boards.clock.advance(0.001)
    for board in (boards.first, boards.second):
        assert board.cooling_until(DEPLOYMENT, boards.now()) is None
        assert board.on_probation(DEPLOYMENT)
        assert not board.all_healthy


async def test_after_the_cooldown_exactly_one_request_claims_the_probe(boards: Boards) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    now = boards.now()
    for board in (boards.first, boards.second):
        assert board.cooling_until(DEPLOYMENT, now) is None
        assert board.on_probation(DEPLOYMENT)
    # Boards sharing Redis share the probe; without Redis a board is alone in its process.
    claimers = [boards.first, boards.second] * 3 if boards.shared_redis else [boards.first] * 6
    claims = await asyncio.gather(*(board.claim_probe(DEPLOYMENT, now) for board in claimers))
    assert claims.count(True) == 1


async def test_a_claimed_probe_is_not_claimed_again_while_it_runs(boards: Boards) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    assert await boards.first.claim_probe(DEPLOYMENT, boards.now()) is True
    boards.clock.advance(RULES.probe_timeout_seconds - 1)
    assert await boards.first.claim_probe(DEPLOYMENT, boards.now()) is False


def test_a_probe_that_never_ends_is_given_to_another_request_after_its_timeout() -> None:
    clock = ManualClock()
    board = memory_board(clock, RULES)
    run(fail(board, RULES.allowed_fails))
    clock.advance(RULES.cooldown_seconds)
    assert run(board.claim_probe(DEPLOYMENT, board.now_ms())) is True
    clock.advance(RULES.probe_timeout_seconds - 1)
    assert run(board.claim_probe(DEPLOYMENT, board.now_ms())) is False
    clock.advance(1)
    assert run(board.claim_probe(DEPLOYMENT, board.now_ms())) is True


async def test_a_failed_probe_cools_the_deployment_again_at_once(boards: Boards) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    assert await boards.first.claim_probe(DEPLOYMENT, boards.now())
    assert await boards.first.failed(DEPLOYMENT) is True  # one failure, not allowed_fails
    again = boards.now() + 30_000
    assert boards.first.cooling_until(DEPLOYMENT, boards.now()) == again
    await boards.until(lambda: boards.second.cooling_until(DEPLOYMENT, boards.now()) == again)


async def test_after_a_failed_probe_and_another_cooldown_a_new_probe_can_be_claimed(
    boards: Boards,
) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    assert await boards.first.claim_probe(DEPLOYMENT, boards.now())
    assert await boards.first.failed(DEPLOYMENT) is True
    boards.clock.advance(RULES.cooldown_seconds)
    claimed = await boards.first.claim_probe(DEPLOYMENT, boards.now())
    assert claimed, "the failed probe still holds the claim: nobody may probe again"


# --- recovery -----------------------------------------------------------------------------


async def test_a_success_recovers_the_deployment_and_every_board_learns_it(boards: Boards) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    assert await boards.second.claim_probe(DEPLOYMENT, boards.now())
    await boards.second.succeeded(DEPLOYMENT)
    assert boards.second.all_healthy
    await boards.until(lambda: boards.first.all_healthy)
    assert not boards.first.on_probation(DEPLOYMENT)


async def test_a_recovered_deployment_needs_allowed_fails_again_to_cool(boards: Boards) -> None:
    await cool(boards)
    boards.clock.advance(RULES.cooldown_seconds)
    await boards.first.succeeded(DEPLOYMENT)
    await boards.until(lambda: boards.second.all_healthy)
    assert await fail(boards.first, RULES.allowed_fails) == [False, False, True]


async def test_a_success_on_a_healthy_deployment_announces_nothing(boards: Boards) -> None:
    heard: list[str] = []

    async def listen(topic: str, payload: str) -> None:
        heard.append(topic)

    boards.first_bus.subscribe(listen)
    await boards.first.failed(DEPLOYMENT)  # counted, not cooled
    await boards.first.succeeded(DEPLOYMENT)
    assert heard == []
    boards.first_bus.unsubscribe(listen)


async def test_a_malformed_health_message_is_ignored() -> None:
    board = memory_board(ManualClock(), RULES)
    for payload in ["not json", "{}", '{"d": "x"}', '{"d": "x", "u": "soon"}', "[1]"]:
        await board.on_message(HEALTH_TOPIC, payload)
    await board.on_message("api_key", '{"d": "x", "u": 1}')
    assert board.all_healthy


# --- counted together across processes ----------------------------------------------------


async def test_boards_sharing_redis_count_failures_together(boards_sharing_redis: Boards) -> None:
    boards = boards_sharing_redis
    assert await fail(boards.first, 2) == [False, False]
    assert await boards.second.failed(DEPLOYMENT) is True
    until = boards.now() + 30_000
    assert boards.second.cooling_until(DEPLOYMENT, boards.now()) == until
    await boards.until(lambda: boards.first.cooling_until(DEPLOYMENT, boards.now()) == until)


async def test_boards_of_one_process_without_redis_each_count_their_own(
    boards_of_one_process: Boards,
) -> None:
    boards = boards_of_one_process
    assert await fail(boards.first, 2) == [False, False]
    assert await boards.second.failed(DEPLOYMENT) is False
    assert boards.first.all_healthy and boards.second.all_healthy


async def test_a_success_between_failures_does_not_reset_their_count(boards: Boards) -> None:
    """Failures are counted in their window whether or not other calls succeed meanwhile, the
    same in one process as across processes sharing Redis: a deployment failing every other
    call still cools down."""
    assert await boards.first.failed(DEPLOYMENT) is False
    assert await boards.first.failed(DEPLOYMENT) is False
    await boards.first.succeeded(DEPLOYMENT)
    assert await boards.first.failed(DEPLOYMENT) is True
