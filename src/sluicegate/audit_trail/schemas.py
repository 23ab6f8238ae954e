"""Response shapes of the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from sluicegate.audit.service import ChainReport


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    seq: int
    created_at: datetime
    actor_user_id: str | None
    action: str
    target_type: str
    target_id: str | None
    group_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    prev_hash: str
    hash: str


class ChainReportOut(BaseModel):
    chain: str
    intact: bool
    checked: int
    broken_event_id: str | None
    broken_seq: int | None
    problem: str | None

    @classmethod
    def of(cls, report: ChainReport) -> ChainReportOut:
        return cls(
            chain=report.org_id,
            intact=report.intact,
            checked=report.checked,
            broken_event_id=report.broken_event_id,
            broken_seq=report.broken_seq,
            problem=report.problem,
        )
