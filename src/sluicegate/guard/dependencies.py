"""The guard's counter store as a FastAPI dependency of the admin routes that read or change
counters (budgets' spent and reserved, the credit balance)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sluicegate.guard.counters import GuardStore


def counters(request: Request) -> GuardStore:
    store: GuardStore = request.app.state.runtime.counters
    return store


Counters = Annotated[GuardStore, Depends(counters)]
