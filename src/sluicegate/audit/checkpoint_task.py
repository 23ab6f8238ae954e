"""Checkpoints on a schedule: at every multiple of SLUICEGATE_AUDIT_CHECKPOINT_MINUTES (counted
from midnight UTC, so workers that restart often still take them) each worker signs the head of
every chain that grew since it last did, writes it to the log at info (`audit checkpoint`, the
value in `checkpoint`) and hands it to `announce` (the wiring raises the `audit.checkpoint`
alert, once per head between all workers, so rules deliver it to a webhook or a mailbox):
copies outside the database that a later `audit verify --checkpoint` compares the chain with."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sluicegate.audit.checkpoints import Checkpoint, checkpoint_key, sign
from sluicegate.audit.service import HeadUnsealed, chains, checkpoint_of
from sluicegate.core.clock import Clock
from sluicegate.core.logs import log_failure

# Called in a transaction of its own with each new checkpoint and its signed value.
Announce = Callable[[AsyncSession, Checkpoint, str], Awaitable[None]]

log = logging.getLogger("sluicegate.audit")


class CheckpointTask:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        secret: bytes,
        every_seconds: float,
        announce: Announce | None = None,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._key = checkpoint_key(secret)
        self._every = every_seconds
        self._announce = announce
        self._emitted: dict[str, int] = {}  # chain -> seq of its last checkpoint here
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        if self._task is None and self._every > 0:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="audit-checkpoints")

    async def close(self) -> None:
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _until_next(self) -> float:
        """Seconds until the next multiple of the period since midnight UTC."""
        now = self._clock.now().timestamp()
        return self._every - now % self._every

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._until_next())
            if self._stop.is_set():
                return
            try:
                await self.run_once()
            except (SQLAlchemyError, OSError) as exc:
                log_failure(log, "taking audit checkpoints failed; retrying next round", exc)

    async def run_once(self) -> list[str]:
        """Sign and emit a checkpoint of every chain that grew; the values emitted."""
        emitted = []
        async with self._sessions() as session:
            names = await chains(session)
        for chain in names:
            async with self._sessions() as session, session.begin():
                try:
                    checkpoint = await checkpoint_of(session, chain, self._clock.now())
                except HeadUnsealed as exc:
                    log.error("audit checkpoint refused: %s", exc, extra={"chain": chain})
                    continue
                if self._emitted.get(chain) == checkpoint.seq:
                    continue
                value = sign(checkpoint, self._key)
                if self._announce is not None:
                    await self._announce(session, checkpoint, value)
            log.info(
                "audit checkpoint",
                extra={"chain": chain, "seq": checkpoint.seq, "checkpoint": value},
            )
            self._emitted[chain] = checkpoint.seq
            emitted.append(value)
        return emitted
