"""Domain events: how a capability says that something happened without importing the ones that
care (keys do not call alerts, orgs do not call the guard's counters).

A capability defines its events as frozen dataclasses (e.g. `keys/events.py`) and `announce`s
them on the session of its unit of work. The wiring layer (`sluicegate/handlers.py`) registers
who handles what; the unit of work carries that registry in `session.info`:

- `EventHandlers.on`: run by `announce` itself, inside the change's transaction, so what the
  handler writes (an alert in the outbox, rebuilt rollups) commits exactly when the change does.
- `EventHandlers.after_commit`: queued on the unit of work and run once the commit succeeded
  (side effects outside the database, e.g. dropping a Redis counter); dropped on rollback.

A session without a registry refuses to announce: an event nobody hears is a silent bug.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.db import after_commit

HANDLERS_KEY = "sluicegate.event_handlers"

E = TypeVar("E")
InTransaction = Callable[[AsyncSession, Any], Awaitable[None]]
AfterCommit = Callable[[Any], Awaitable[None]]


class EventHandlers:
    """Who handles which event type, in registration order."""

    def __init__(self) -> None:
        self._in_transaction: dict[type, list[InTransaction]] = {}
        self._after_commit: dict[type, list[AfterCommit]] = {}

    def on(self, event: type[E], handler: Callable[[AsyncSession, E], Awaitable[None]]) -> None:
        """Run `handler(session, event)` in the transaction that announces the event."""
        self._in_transaction.setdefault(event, []).append(handler)

    def after_commit(self, event: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Run `handler(event)` once the announcing transaction committed."""
        self._after_commit.setdefault(event, []).append(handler)

    def handles(self, event: type) -> bool:
        return event in self._in_transaction or event in self._after_commit

    async def dispatch(self, session: AsyncSession, event: object) -> None:
        kind = type(event)
        for handler in self._in_transaction.get(kind, ()):
            await handler(session, event)
        for later in self._after_commit.get(kind, ()):
            after_commit(session, _bound(later, event))


def _bound(handler: AfterCommit, event: object) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await handler(event)

    return run


def session_info(handlers: EventHandlers) -> dict[str, Any]:
    """What a session factory puts in every session's `info` so its units of work can announce."""
    return {HANDLERS_KEY: handlers}


async def announce(session: AsyncSession, event: object) -> None:
    """Tell the registered handlers that `event` happened in this session's transaction."""
    handlers: EventHandlers | None = session.info.get(HANDLERS_KEY)
    if handlers is None:
        raise RuntimeError(
            f"{type(event).__name__} announced on a session without event handlers; build "
            "sessions through the Runtime (sluicegate/runtime.py), which registers them"
        )
    await handlers.dispatch(session, event)
