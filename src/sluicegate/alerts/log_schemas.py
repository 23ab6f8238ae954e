"""Response shapes of the alert log (alerts, their deliveries, every attempt) and of a channel's
test-send."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.alerts.log_service import AlertView, ChannelTestResult, DeliveryView

DeliveryStatus = Literal["pending", "delivered", "failed", "expired", "cancelled"]


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int = Field(description="1 for the first try of the delivery")
    started_at: datetime
    duration_ms: int
    status_code: int | None = Field(
        description="the receiver's HTTP status, or the SMTP server's reply code for mail; "
        "null: no answer"
    )
    error: str | None
    outcome: Literal["delivered", "retry", "failed", "expired"] = Field(
        description="retry: tried again later; failed: given up (a permanent error); expired: "
        "given up because the next try would come after the alert's max age"
    )


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str = Field(
        description="also the Idempotency-Key of every attempt (by mail: the Message-ID "
        "<id@sluicegate>)"
    )
    channel_id: str | None = Field(description="the channel it goes to; null: to a person")
    recipient_user_id: str | None = Field(
        description="the person it is mailed to (at their current address); null: to a channel"
    )
    rule_id: str | None
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None


class DeliveryDetail(DeliveryOut):
    attempts_log: list[AttemptOut]

    @classmethod
    def of(cls, view: DeliveryView) -> DeliveryDetail:
        return cls(
            **DeliveryOut.model_validate(view.delivery).model_dump(),
            attempts_log=[AttemptOut.model_validate(a) for a in view.attempts],
        )


class _AlertFields(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    event: str
    severity: Literal["info", "warning", "critical"]
    title: str
    text: str
    group_id: str | None = Field(description="the group the event happened at; null: the org")
    fields: list[list[str]] = Field(description="[label, value] pairs, in display order")
    details: dict[str, Any]
    occurred_at: datetime
    created_at: datetime


class AlertOut(_AlertFields):
    deliveries: list[DeliveryOut]

    @classmethod
    def of(cls, view: AlertView) -> AlertOut:
        return cls(
            **_AlertFields.model_validate(view.alert).model_dump(),
            deliveries=[DeliveryOut.model_validate(d.delivery) for d in view.deliveries],
        )


class AlertDetail(_AlertFields):
    deliveries: list[DeliveryDetail]

    @classmethod
    def of(cls, view: AlertView) -> AlertDetail:
        return cls(
            **_AlertFields.model_validate(view.alert).model_dump(),
            deliveries=[DeliveryDetail.of(d) for d in view.deliveries],
        )


class ChannelTestOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    delivered: bool = Field(
        description="the receiver answered 2xx (the SMTP server accepted the mail)"
    )
    status_code: int | None = Field(
        description="the receiver's HTTP status, or the SMTP reply code; null: no answer"
    )
    error: str | None = Field(description="why it was not delivered, in words")
    duration_ms: int

    @classmethod
    def of(cls, result: ChannelTestResult) -> ChannelTestOut:
        return cls.model_validate(result)
