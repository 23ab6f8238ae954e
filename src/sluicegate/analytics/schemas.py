"""Response shapes of analytics (DESIGN §9): money as exact decimal USD strings, instants in UTC,
`from` inclusive and `to` exclusive."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sluicegate.analytics.service import (
    Activity,
    Cards,
    KeyDetail,
    Labelled,
    MemberDetail,
    Members,
    MemberStats,
    Point,
    View,
    error_rate,
    member_label,
)
from sluicegate.analytics.sums import Sums
from sluicegate.core.money import nanos_to_usd

GroupBy = Literal["model", "project", "key", "member", "provider", "app", "deployment"]
Metric = Literal["cost", "requests", "tokens"]
Granularity = Literal["hour", "day", "week", "month"]
ReadFrom = Literal["daily_rollups", "15_minute_rollups"]


class TotalsOut(BaseModel):
    cost_usd: str
    requests: int = Field(description="every request: failed and blocked ones too")
    errors: int = Field(description="failed requests (not those a guardrail blocked)")
    blocked: int = Field(description="requests a guardrail (budget, rate limit, policy) stopped")
    tokens: int = Field(description="prompt + completion tokens")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(description="prompt tokens served from the provider's cache")

    @classmethod
    def of(cls, sums: Sums) -> TotalsOut:
        return cls(
            cost_usd=nanos_to_usd(sums.cost_nusd),
            requests=sums.requests,
            errors=sums.errors,
            blocked=sums.blocked,
            tokens=sums.tokens,
            prompt_tokens=sums.prompt_tokens,
            completion_tokens=sums.completion_tokens,
            cached_tokens=sums.cached_tokens,
        )


class CardsOut(BaseModel):
    total_spend_usd: str
    requests: int
    tokens: int
    active_members: int = Field(description="members with usage in the window")
    avg_tokens_per_member: int = Field(description="tokens / active members, rounded")
    avg_cost_per_call_usd: str = Field(description="spend / requests, rounded to 1 nano-USD")
    avg_latency_ms: int = Field(description="mean latency per request, rounded")
    error_rate: float = Field(description="errors / requests, 0 to 1")
    models_in_use: int = Field(description="distinct requested models with usage")

    @classmethod
    def of(cls, cards: Cards) -> CardsOut:
        sums = cards.sums
        latency = round(sums.latency_ms_sum / sums.requests) if sums.requests else 0
        return cls(
            total_spend_usd=nanos_to_usd(sums.cost_nusd),
            requests=sums.requests,
            tokens=sums.tokens,
            active_members=cards.members,
            avg_tokens_per_member=cards.avg_tokens_per_member,
            avg_cost_per_call_usd=nanos_to_usd(cards.avg_cost_per_call_nusd),
            avg_latency_ms=latency,
            error_rate=cards.error_rate,
            models_in_use=cards.models,
        )


class GroupOut(BaseModel):
    id: str = Field(
        description="the model, group, key, member, provider, app or deployment; '(other)' "
        "sums the groups past `limit`; '' is no provider, no app or no deployment (a request "
        "that reached none)"
    )
    label: str
    totals: TotalsOut

    @classmethod
    def of(cls, group: Labelled) -> GroupOut:
        return cls(id=group.id, label=group.label, totals=TotalsOut.of(group.sums))


class PointOut(BaseModel):
    bucket_start: datetime = Field(
        description="the bucket's first instant (the window's start for a first bucket the "
        "window cuts short)"
    )
    group_id: str | None = Field(description="null without groupBy")
    cost_usd: str
    requests: int
    tokens: int

    @classmethod
    def of(cls, point: Point) -> PointOut:
        # Built unvalidated: a year of days by model is thousands of points, from our own sums.
        return cls.model_construct(
            bucket_start=point.bucket_start,
            group_id=point.group_id,
            cost_usd=nanos_to_usd(point.sums.cost_nusd),
            requests=point.sums.requests,
            tokens=point.sums.tokens,
        )


class WindowOut(BaseModel):
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    from_: datetime = Field(alias="from", description="the window's first instant (UTC)")
    to: datetime = Field(description="the instant after the window (exclusive)")
    timezone: str
    granularity: Granularity
    read_from: ReadFrom = Field(
        description="which rollups answered: the org's daily ones (its own timezone, whole "
        "local days) or the 15-minute ones; the numbers are the same"
    )

    @staticmethod
    def fields(view: View) -> dict[str, object]:
        window = view.window
        return {
            "from_": window.start,
            "to": window.end,
            "timezone": window.timezone,
            "granularity": window.granularity,
            "read_from": "daily_rollups" if view.daily else "15_minute_rollups",
        }


class ActivityOut(WindowOut):
    group_by: GroupBy | None = Field(alias="groupBy")
    metric: Metric
    totals: TotalsOut
    cards: CardsOut
    groups: list[GroupOut] = Field(description="sorted by the metric, largest first")
    series: list[PointOut] = Field(
        description="per bucket and group, buckets in order; buckets without usage are left out"
    )
    buckets: list[datetime] = Field(description="every bucket's start, in order")

    @classmethod
    def of(cls, activity: Activity, *, with_series: bool = True) -> ActivityOut:
        view = activity.view
        return cls(
            **WindowOut.fields(view),
            group_by=activity.group_by,
            metric=activity.metric,
            totals=TotalsOut.of(view.cards.sums),
            cards=CardsOut.of(view.cards),
            groups=[GroupOut.of(group) for group in activity.groups],
            series=[PointOut.of(point) for point in activity.series] if with_series else [],
            buckets=list(view.window.starts),
        )


def activity_json(activity: Activity) -> bytes:
    """ActivityOut as JSON, its series written straight from the points: a year of days by
    model is thousands of them, and a model per point costs more than the rest of the answer.
    The same document as ActivityOut's own (a test compares them); each point's bucket is
    written as the `buckets` list writes it."""
    head = ActivityOut.of(activity, with_series=False).model_dump(mode="json", by_alias=True)
    stamps = dict(zip(activity.view.window.starts, head["buckets"], strict=True))
    head["series"] = [
        {
            "bucket_start": stamps[point.bucket_start],
            "group_id": point.group_id,
            "cost_usd": nanos_to_usd(point.sums.cost_nusd),
            "requests": point.sums.requests,
            "tokens": point.sums.prompt_tokens + point.sums.completion_tokens,
        }
        for point in activity.series
    ]
    return orjson.dumps(head)


class MemberRowOut(BaseModel):
    user_id: str
    name: str | None
    email: str | None
    label: str
    cost_usd: str
    requests: int
    errors: int
    blocked: int
    error_rate: float = Field(description="errors / requests, 0 to 1")
    tokens: int
    prompt_tokens: int
    completion_tokens: int
    key_count: int = Field(description="the member's keys in the org (revoked ones aside)")

    @classmethod
    def of(cls, member: MemberStats) -> MemberRowOut:
        sums = member.sums
        return cls(
            user_id=member.user_id,
            name=member.name,
            email=member.email,
            label=member_label(member.user_id, member.name, member.email),
            cost_usd=nanos_to_usd(sums.cost_nusd),
            requests=sums.requests,
            errors=sums.errors,
            blocked=sums.blocked,
            error_rate=error_rate(sums),
            tokens=sums.tokens,
            prompt_tokens=sums.prompt_tokens,
            completion_tokens=sums.completion_tokens,
            key_count=member.key_count,
        )


class MembersOut(WindowOut):
    totals: TotalsOut
    cards: CardsOut
    items: list[MemberRowOut] = Field(description="members with usage, the largest spend first")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")

    @classmethod
    def of(cls, members: Members) -> MembersOut:
        view = members.view
        return cls(
            **WindowOut.fields(view),
            totals=TotalsOut.of(view.cards.sums),
            cards=CardsOut.of(view.cards),
            items=[MemberRowOut.of(member) for member in members.members],
            next_cursor=members.next_cursor,
        )


class MemberDetailOut(WindowOut):
    member: MemberRowOut
    cards: CardsOut
    top_model: GroupOut | None = Field(description="the model with the largest spend")
    top_provider: GroupOut | None
    top_app: GroupOut | None
    by_model: list[GroupOut] = Field(description="cost by model, the largest first")
    series: list[PointOut] = Field(description="per bucket and model (group_id)")

    @classmethod
    def of(cls, detail: MemberDetail) -> MemberDetailOut:
        def top(group: Labelled | None) -> GroupOut | None:
            return None if group is None else GroupOut.of(group)

        return cls(
            **WindowOut.fields(detail.view),
            member=MemberRowOut.of(detail.member),
            cards=CardsOut.of(detail.view.cards),
            top_model=top(detail.top_model),
            top_provider=top(detail.top_provider),
            top_app=top(detail.top_app),
            by_model=[GroupOut.of(group) for group in detail.by_model],
            series=[PointOut.of(point) for point in detail.series],
        )


class KeyRefOut(BaseModel):
    id: str
    name: str
    prefix: str
    group_id: str
    owner_user_id: str
    status: str


class KeyDetailOut(WindowOut):
    key: KeyRefOut
    totals: TotalsOut
    cards: CardsOut
    error_rate: float = Field(description="errors / requests, 0 to 1")
    by_model: list[GroupOut] = Field(description="cost by model, the largest first")
    series: list[PointOut] = Field(description="per bucket and model (group_id)")

    @classmethod
    def of(cls, detail: KeyDetail) -> KeyDetailOut:
        return cls(
            **WindowOut.fields(detail.view),
            key=KeyRefOut(
                id=detail.key_id,
                name=detail.name,
                prefix=detail.prefix,
                group_id=detail.group_id,
                owner_user_id=detail.owner_user_id,
                status=detail.status,
            ),
            totals=TotalsOut.of(detail.view.cards.sums),
            cards=CardsOut.of(detail.view.cards),
            error_rate=detail.view.cards.error_rate,
            by_model=[GroupOut.of(group) for group in detail.by_model],
            series=[PointOut.of(point) for point in detail.series],
        )
