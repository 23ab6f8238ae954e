"""Shapes of insights: anomalies in daily spend and the period summary. Money is exact decimal
USD strings; days are dates in the org's timezone."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from sluicegate.analytics.insights import (
    BASELINE_DAYS,
    Z_THRESHOLD,
    Anomaly,
    AnomalyReport,
    Mover,
    Summary,
    change_pct,
    decimal_text,
    nearest_nano,
)
from sluicegate.core.money import nanos_to_usd

Dimension = Literal["member", "key", "model"]


class AnomalyOut(BaseModel):
    dimension: Dimension
    id: str = Field(description="the user id, key id or requested model")
    label: str = Field(
        description="the member's name or email, the key's name and prefix, or the model"
    )
    day: date
    spend_usd: str
    baseline_median_usd: str = Field(description="the trailing window's median, to the nano-USD")
    baseline_days: int = Field(description="days in the trailing window")
    z_score: float = Field(description="robust z: (spend - median) / (1.4826 * MAD)")
    direction: Literal["spike", "drop"]
    reason: str

    @classmethod
    def of(cls, anomaly: Anomaly) -> AnomalyOut:
        finding = anomaly.finding
        return cls(
            dimension=anomaly.dimension,
            id=anomaly.id,
            label=anomaly.label,
            day=finding.day,
            spend_usd=nanos_to_usd(finding.spend),
            baseline_median_usd=nanos_to_usd(nearest_nano(finding.median)),
            baseline_days=finding.baseline_days,
            z_score=float(decimal_text(finding.z, 2)),
            direction=finding.direction,
            reason=anomaly.reason,
        )


class AnomaliesOut(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    timezone: str
    baseline_days: int = Field(description="the trailing window each day is compared with")
    z_threshold: float
    anomalies: list[AnomalyOut] = Field(description="the most unusual first")

    @classmethod
    def of(cls, report: AnomalyReport) -> AnomaliesOut:
        return cls(
            from_=report.period.first,
            to=report.period.last,
            timezone=report.timezone,
            baseline_days=BASELINE_DAYS,
            z_threshold=float(Z_THRESHOLD),
            anomalies=[AnomalyOut.of(anomaly) for anomaly in report.anomalies],
        )


def _pct(current: int, previous: int) -> str | None:
    pct = change_pct(current, previous)
    return None if pct is None else decimal_text(pct)


class MoverOut(BaseModel):
    dimension: Dimension
    id: str
    label: str
    current_usd: str
    previous_usd: str
    change_usd: str = Field(description="signed: current - previous")
    change_pct: str | None = Field(description="one decimal; null when nothing was spent before")

    @classmethod
    def of(cls, mover: Mover) -> MoverOut:
        return cls(
            dimension=mover.dimension,
            id=mover.id,
            label=mover.label,
            current_usd=nanos_to_usd(mover.current),
            previous_usd=nanos_to_usd(mover.previous),
            change_usd=nanos_to_usd(mover.change),
            change_pct=_pct(mover.current, mover.previous),
        )


class SummaryOut(BaseModel):
    from_: date = Field(serialization_alias="from")
    to: date
    previous_from: date
    previous_to: date
    timezone: str
    total_usd: str
    previous_total_usd: str
    change_pct: str | None = Field(description="one decimal; null when nothing was spent before")
    movers: list[MoverOut] = Field(
        description="per member, model and key, the largest changes against the previous period"
    )
    sentences: list[str]

    @classmethod
    def of(cls, summary: Summary) -> SummaryOut:
        period = summary.period
        return cls(
            from_=period.first,
            to=period.last,
            previous_from=period.previous_first,
            previous_to=period.previous_last,
            timezone=summary.timezone,
            total_usd=nanos_to_usd(summary.total),
            previous_total_usd=nanos_to_usd(summary.previous_total),
            change_pct=_pct(summary.total, summary.previous_total),
            movers=[MoverOut.of(mover) for mover in summary.movers],
            sentences=summary.sentences,
        )
