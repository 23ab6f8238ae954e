"""What code below the wiring may ask of the process's long-lived resources: the settings, the
clock and a unit of work. `sluicegate/runtime.py` `Runtime` provides them; the admin API's
dependencies and the alert delivery worker take this protocol instead of importing the runtime
(the wiring layer above them)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.clock import Clock
from sluicegate.settings import Settings


class Resources(Protocol):
    settings: Settings
    clock: Clock

    def unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]: ...
