"""Request and response shapes of alert channels and rules, and the params each event takes
(checked by the rules service for creation and changes alike, stored in their normalised form).
A channel's URL, addresses and signing secrets are never in an answer; the secret appears only
in ChannelCreated, on creation and rotation."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

from sluicegate.api.fields import USD, Id, Label
from sluicegate.core.mail_addresses import MAX_ADDRESS_LENGTH, mail_address
from sluicegate.core.money import nanos_to_usd

if TYPE_CHECKING:
    from sluicegate.alerts.models import AlertChannel, AlertRule

ChannelKind = Literal["webhook", "slack", "discord", "email"]
# The same names as alerts.models.EVENTS (tests/alerts/test_rules_api.py holds them equal).
Event = Literal[
    "budget.threshold",
    "credit.low",
    "anomaly.detected",
    "guardrail.blocked",
    "key.created",
    "key.disabled",
    "key.expired",
    "member.joined",
    "member.removed",
    "audit.checkpoint",
]

URL_MAX_LENGTH = 2000
# An email channel is a team's list, not a mailing list: beyond this, use a list address.
MAX_CHANNEL_ADDRESSES = 20
MAX_RULE_CHANNELS = 20
MAX_RECIPIENT_USERS = 100
MAX_BUDGET_IDS = 100
# Thresholds are percentages of a budget; a soft budget can be overrun tenfold and still alert.
MAX_MIN_PERCENT = 1000
MAX_RUNWAY_DAYS = 365
MINUTES_PER_DAY = 1440
# Far above any useful count of blocked requests in a day's window, far inside JSON integers.
MAX_BLOCKED_COUNT = 1_000_000

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# Checked for its kind and against SSRF by the service, which names what is wrong with it.
ChannelURL = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=URL_MAX_LENGTH),
    AfterValidator(_no_control),
    Field(
        description="webhook: any public http(s) URL; slack: https://hooks.slack.com/...; "
        "discord: https://discord.com/api/webhooks/... . Stored encrypted, never shown again",
        examples=["https://alerts.example.com/sluicegate"],
    ),
]
MailAddress = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=MAX_ADDRESS_LENGTH),
    AfterValidator(mail_address),
]


def _distinct_addresses(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))


Addresses = Annotated[
    list[MailAddress],
    AfterValidator(_distinct_addresses),
    Field(
        min_length=1,
        max_length=MAX_CHANNEL_ADDRESSES,
        description="email channels: the addresses each alert is mailed to (1 to 20). Stored "
        "encrypted, never shown again",
        examples=[["oncall@example.com"]],
    ),
]
Count = Annotated[int, Field(strict=True)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- channels ----------------------------------------------------------------------------------


class ChannelCreate(Strict):
    name: Label
    kind: ChannelKind = Field(
        description="webhook (JSON, signed with HMAC-SHA256), slack or discord (their incoming "
        "webhooks) take a url; email takes `to`, and only when the operator configured an "
        "SMTP server (SLUICEGATE_SMTP_URL)"
    )
    url: ChannelURL | None = None
    to: Addresses | None = None
    enabled: bool = True


class ChannelUpdate(Strict):
    """Only the fields sent change; a new url is checked again. The kind never changes: url
    for webhook, slack and discord channels, to for email channels."""

    name: Label | None = None
    url: ChannelURL | None = None
    to: Addresses | None = None
    enabled: bool | None = None


class ChannelOut(BaseModel):
    id: str
    name: str
    kind: ChannelKind
    target: str = Field(
        description="the URL's scheme and host only (a Slack or Discord webhook's path is its "
        "credential); for an email channel how many addresses it has, never which",
        examples=["https://hooks.slack.com", "email: 2 addresses"],
    )
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, channel: AlertChannel) -> ChannelOut:
        return cls(
            id=channel.id,
            name=channel.name,
            kind=channel.kind,
            target=channel.target_hint,
            enabled=channel.enabled,
            created_at=channel.created_at,
            updated_at=channel.updated_at,
        )


class ChannelCreated(ChannelOut):
    signing_secret: str | None = Field(
        description="webhook channels: the HMAC-SHA256 signing secret, shown only in this "
        "answer (creation and rotation); store it now. null for slack, discord and email"
    )
    previous_secret_expires_at: datetime | None = Field(
        default=None,
        description="after a rotation: until when deliveries are also signed with the old secret",
    )


# --- rule params, per event ------------------------------------------------------------------


class BudgetThresholdParams(Strict):
    budget_ids: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_BUDGET_IDS,
        description="only the thresholds of these budgets; absent: every budget in scope",
    )
    min_percent: Count | None = Field(
        default=None,
        ge=1,
        le=MAX_MIN_PERCENT,
        description="only thresholds at or above this percentage",
    )

    @field_validator("budget_ids")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(value))


class CreditLowParams(Strict):
    below_usd: USD | None = Field(
        default=None, description="when the available balance falls below this amount"
    )
    runway_days: Count | None = Field(
        default=None,
        ge=1,
        le=MAX_RUNWAY_DAYS,
        description="when the balance lasts fewer days than this at the recent spend rate",
    )

    @field_validator("below_usd")
    @classmethod
    def _not_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError("must be 0 or more")
        return value

    @model_validator(mode="after")
    def _one_condition(self) -> CreditLowParams:
        if self.below_usd is None and self.runway_days is None:
            raise ValueError("credit.low needs below_usd, runway_days or both")
        return self

    @field_serializer("below_usd")
    def _usd(self, value: int | None) -> str | None:
        return None if value is None else nanos_to_usd(value)


class GuardrailBlockedParams(Strict):
    count: Count = Field(
        ge=1, le=MAX_BLOCKED_COUNT, description="alert when at least this many requests..."
    )
    window_minutes: Count = Field(
        ge=1, le=MINUTES_PER_DAY, description="...are blocked within this many minutes"
    )


class NoParams(Strict):
    """The event fires on every occurrence in scope: nothing to set."""


EVENT_PARAMS: dict[str, type[Strict]] = {
    "budget.threshold": BudgetThresholdParams,
    "credit.low": CreditLowParams,
    "anomaly.detected": NoParams,
    "guardrail.blocked": GuardrailBlockedParams,
    "key.created": NoParams,
    "key.disabled": NoParams,
    "key.expired": NoParams,
    "member.joined": NoParams,
    "member.removed": NoParams,
    "audit.checkpoint": NoParams,
}

PARAMS_DESCRIPTION = (
    "the event's settings, stored normalised (money as decimal strings, unset fields left "
    "out): budget.threshold {budget_ids?: [id], min_percent?: 1..1000}; credit.low "
    "{below_usd?: USD >= 0, runway_days?: 1..365; at least one}; guardrail.blocked "
    "{count: >= 1, window_minutes: 1..1440}; anomaly.detected, key.* and member.* {}"
)


# --- rules ---------------------------------------------------------------------------------


class Recipients(Strict):
    key_owner: bool = Field(default=False, description="the owner of the key concerned")
    scope_admins: bool = Field(
        default=False, description="the owners and admins covering the node the event is at"
    )
    user_ids: list[Id] = Field(
        default_factory=list,
        max_length=MAX_RECIPIENT_USERS,
        description="named members of the organization",
    )

    @field_validator("user_ids")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


CHANNEL_IDS_DESCRIPTION = "channels of this organization (not deleted) the alerts go to"


class RuleCreate(Strict):
    name: Label
    event: Event
    scope_group_id: Id | None = Field(
        default=None, description="the group whose subtree the rule watches; null: the whole org"
    )
    params: dict[str, Any] | None = Field(default=None, description=PARAMS_DESCRIPTION)
    recipients: Recipients = Field(default_factory=Recipients)
    channel_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_RULE_CHANNELS, description=CHANNEL_IDS_DESCRIPTION
    )
    enabled: bool = True


class RuleUpdate(Strict):
    """Only the fields sent change. scope_group_id null: the whole org; any other null: no
    change. recipients, params and channel_ids are replaced as a whole. A new event checks the
    params again (the rule's own when none are sent)."""

    name: Label | None = None
    event: Event | None = None
    scope_group_id: Id | None = None
    params: dict[str, Any] | None = Field(default=None, description=PARAMS_DESCRIPTION)
    recipients: Recipients | None = None
    channel_ids: list[Id] | None = Field(
        default=None, max_length=MAX_RULE_CHANNELS, description=CHANNEL_IDS_DESCRIPTION
    )
    enabled: bool | None = None


class RuleOut(BaseModel):
    id: str
    name: str
    event: Event
    scope_group_id: str | None
    params: dict[str, Any] = Field(description=PARAMS_DESCRIPTION)
    recipients: Recipients
    channel_ids: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: AlertRule) -> RuleOut:
        return cls(
            id=rule.id,
            name=rule.name,
            event=rule.event,
            scope_group_id=rule.scope_group_id,
            params=rule.params,
            recipients=Recipients.model_validate(rule.recipients),
            channel_ids=list(rule.channel_ids),
            enabled=rule.enabled,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )
