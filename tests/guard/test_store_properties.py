"""Random sequences of reserve, settle, duplicate settle, crash (never settled), the clock moving
past reservation deadlines and settles arriving after them, against both stores: the counters
always equal settled spend plus live reservations; a hard budget is never exceeded and the credit
never goes below zero, except by what was settled after its reservation had expired (a request
outliving the reservation TTL, which the gateway prevents by extending long streams)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sluicegate.core.clock import ManualClock
from sluicegate.guard.counters import Blocked, CreditSeed, Reserved
from tests.guard.stores import START, TTL_MS, Org, Seeds, close_store, make_store

LIMIT = 1_000
BALANCE = 800


@dataclass
class Held:
    reserved: Reserved
    amount: int
    deadline_ms: int
    settled: bool = False
    crashed: bool = False


def machine_for(kind: str, redis_url: str, prefix: str) -> type[RuleBasedStateMachine]:
    class CounterModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.clock = ManualClock(START)
            self.store = make_store(kind, self.clock, redis_url, prefix)
            self.org = Org()
            self.hard = self.org.budget(LIMIT, name="hard")
            self.soft = self.org.budget(LIMIT // 4, hard=False, name="soft")
            self.seeds = Seeds({self.org.credit.key: CreditSeed(BALANCE, BALANCE, 1)})
            self.held: list[Held] = []
            self.settled_spend = 0
            self.late_spend = 0

        def run(self, coroutine):  # type: ignore[no-untyped-def]
            return self.loop.run_until_complete(coroutine)

        def teardown(self) -> None:
            self.run(close_store(self.store))
            self.loop.close()

        @property
        def now_ms(self) -> int:
            return int(self.clock.now().timestamp() * 1000)

        def live(self) -> int:
            return sum(h.amount for h in self.held if not h.settled and h.deadline_ms > self.now_ms)

        @initialize()
        def start(self) -> None:
            self.run(self.store.read([self.hard, self.soft, self.org.credit], self.seeds))

        @rule(amount=st.integers(min_value=0, max_value=LIMIT // 3))
        def reserve(self, amount: int) -> None:
            fits = (
                self.settled_spend + self.live() + amount <= LIMIT
                and self.live() + amount <= BALANCE - self.settled_spend
            )
            plan = self.org.plan(amount, self.hard, self.soft, self.org.credit)
            result = self.run(self.store.reserve(plan, self.seeds))
            assert isinstance(result, Reserved) == fits, (result, fits)
            if isinstance(result, Reserved):
                self.held.append(Held(result, amount, self.now_ms + TTL_MS))
            else:
                assert isinstance(result, Blocked)

        def open_(self) -> list[Held]:
            return [
                h
                for h in self.held
                if not h.settled and not h.crashed and h.deadline_ms > self.now_ms
            ]

        def expired(self) -> list[Held]:
            return [
                h
                for h in self.held
                if not h.settled and not h.crashed and h.deadline_ms <= self.now_ms
            ]

        @precondition(lambda self: self.open_())
        @rule(data=st.data())
        def settle(self, data: st.DataObject) -> None:
            held = data.draw(st.sampled_from(self.open_()))
            cost = data.draw(st.integers(min_value=0, max_value=held.amount))
            assert self.run(self.store.settle(held.reserved, cost, 0)) is not None
            held.settled = True
            self.settled_spend += cost

        @precondition(lambda self: self.expired())
        @rule(data=st.data())
        def settle_late(self, data: st.DataObject) -> None:
            """The request outlived its reservation; what it cost is still charged, once."""
            held = data.draw(st.sampled_from(self.expired()))
            cost = data.draw(st.integers(min_value=0, max_value=held.amount))
            assert self.run(self.store.settle(held.reserved, cost, 0)) is not None
            held.settled = True
            self.settled_spend += cost
            self.late_spend += cost

        @precondition(lambda self: any(h.settled for h in self.held))
        @rule(data=st.data())
        def settle_again(self, data: st.DataObject) -> None:
            held = data.draw(st.sampled_from([h for h in self.held if h.settled]))
            assert self.run(self.store.settle(held.reserved, held.amount, 0)) is None

        @precondition(lambda self: self.open_())
        @rule(data=st.data())
        def crash(self, data: st.DataObject) -> None:
            """The gateway dies: this reservation is never settled; it lives until its deadline."""
            data.draw(st.sampled_from(self.open_())).crashed = True

        @rule(seconds=st.integers(min_value=1, max_value=TTL_MS // 1000 * 3 // 2))
        def time_passes(self, seconds: int) -> None:
            self.clock.advance(seconds)

        @invariant()
        def counters_equal_settled_spend_plus_live_reservations(self) -> None:
            hard, soft, credit = self.run(
                self.store.read([self.hard, self.soft, self.org.credit], self.seeds)
            )
            live = self.live()
            assert (hard.used, hard.reserved) == (self.settled_spend, live)
            assert (soft.used, soft.reserved) == (self.settled_spend, live)
            assert (credit.used, credit.reserved) == (BALANCE - self.settled_spend, live)
            assert hard.used + hard.reserved <= LIMIT + self.late_spend
            assert credit.used - credit.reserved >= -self.late_spend

    return CounterModel


@pytest.mark.parametrize("kind", ["redis", "memory"])
def test_counters_equal_settled_spend_plus_live_reservations(
    kind: str, redis_url: str, redis_prefix: str
) -> None:
    machine = machine_for(kind, redis_url, redis_prefix)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
