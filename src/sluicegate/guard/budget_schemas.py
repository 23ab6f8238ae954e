"""Request and response shapes of budgets. Money: a decimal USD string out; string or number in."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluicegate.api.fields import USD, Id

ScopeType = Literal["org", "group", "member", "key", "member_default"]
Period = Literal["day", "week", "month", "total"]
MAX_THRESHOLDS = 10
Percent = Annotated[int, Field(ge=1, le=100)]


class BudgetPut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope_type: ScopeType = Field(
        description="org, group, member (a user's spend in this org), key, or member_default "
        "(the org-wide budget of every member without one of their own for that period)"
    )
    scope_id: Id | None = Field(
        default=None,
        description="the org id, group id, user id or key id; for org and member_default it "
        "may be left out",
    )
    limit_usd: USD = Field(description="the cap in USD; 0 blocks every request")
    period: Period = Field(
        description="day, week (Monday first) or month in the org's timezone, or total"
    )
    enforcement: Literal["hard", "soft"] = Field(
        default="hard",
        description="hard: requests that could exceed it are refused (402); "
        "soft: counted and alerted on, never refused",
    )
    thresholds: list[Percent] = Field(
        default_factory=list,
        max_length=MAX_THRESHOLDS,
        description="percentages of the limit at which alerts fire, e.g. [50, 90]",
    )

    @field_validator("limit_usd")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value


class BudgetOut(BaseModel):
    id: str
    scope_type: ScopeType
    scope_id: str
    limit_usd: str
    period: Period
    enforcement: Literal["hard", "soft"]
    thresholds: list[int]
    spent_usd: str | None = Field(
        description="settled spend in the current period (null for member_default: each "
        "member has their own)"
    )
    reserved_usd: str | None = Field(description="held by requests in flight right now")
    remaining_usd: str | None = Field(description="limit - spent - reserved, never below 0")
    period_start: datetime | None = Field(description="null for a total budget")
    period_end: datetime | None
    created_at: datetime
    updated_at: datetime
