"""The background work, as `serve` runs it (SLUICEGATE_RUN_WORKER) and as `sluicegate worker`
runs it alone: draining the Redis usage streams into the database (with Redis), applying the
usage retention, evaluating the condition alerts (low credit, guardrail blocks, anomalies,
expired keys), delivering alerts from the outbox and signing checkpoints of the audit chains.
Several of these may run at once, in any processes."""

from __future__ import annotations

from sluicegate.alerts.delivery import AlertDeliveryWorker
from sluicegate.alerts.evaluator import AlertEvaluator
from sluicegate.alerts.lifecycle import audit_checkpoint
from sluicegate.audit.checkpoint_task import CheckpointTask
from sluicegate.keys.lookup import mark_keys_used
from sluicegate.metering.drain import UsageDrain
from sluicegate.metering.retention import RetentionTask
from sluicegate.runtime import Runtime


class UsageWorker:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.drain = (
            UsageDrain(
                runtime.redis,
                settings.redis_prefix,
                runtime.sessions,
                after_insert=mark_keys_used,
                claim_idle_ms=int(settings.usage_claim_idle_seconds * 1000),
            )
            if runtime.redis is not None
            else None
        )
        self.retention = RetentionTask(
            runtime.sessions, runtime.clock, settings.usage_retention_months
        )
        self.alerts = AlertDeliveryWorker(runtime)
        self.evaluator = AlertEvaluator(runtime.sessions, runtime.clock)
        self.checkpoints = CheckpointTask(
            runtime.sessions,
            runtime.clock,
            settings.secret,
            settings.audit_checkpoint_minutes * 60,
            announce=audit_checkpoint,
        )

    async def start(self) -> None:
        if self.drain is not None:
            await self.drain.start()
        await self.retention.start()
        await self.alerts.start()
        await self.evaluator.start()
        await self.checkpoints.start()

    async def close(self) -> None:
        if self.drain is not None:
            await self.drain.close()
        await self.retention.close()
        await self.evaluator.close()
        await self.alerts.close()
        await self.checkpoints.close()
