"""HTTP routes of insights under /api/v1/orgs/{org_id}/insights: anomalies and the summary."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sluicegate.analytics import insights
from sluicegate.analytics.feed_schemas import Day
from sluicegate.analytics.insights_schemas import AnomaliesOut, SummaryOut
from sluicegate.api.deps import DbSession, Now
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.identity.dependencies import CurrentActor

router = APIRouter(prefix="/orgs/{org_id}/insights", tags=["insights"], responses=STANDARD_ERRORS)

First = Annotated[
    Day | None,
    Query(alias="from", description="a date in the org's timezone; default: 6 days before `to`"),
]
Last = Annotated[Day | None, Query(alias="to", description="a date, inclusive; default: today")]


@router.get("/anomalies")
async def anomalies(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    first: First = None,
    last: Last = None,
) -> AnomaliesOut:
    """Days of unusual spend per member, key and model: each day's spend against the median of
    the 14 days before it (robust z from the median absolute deviation, |z| >= 3.5, at least
    1 USD away from the median, outside the window's range, 7 days with spend needed). Drops are
    reported for days that are over. Owners, admins and viewers read their subtrees; members
    their own usage (or the org's, when the org opens its feed to members)."""
    report = await insights.anomalies(session, actor, org_id, first=first, last=last, now=now)
    return AnomaliesOut.of(report)


@router.get("/summary")
async def summary(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    first: First = None,
    last: Last = None,
) -> SummaryOut:
    """The period's spend against the equal-length period before it, the members, models and
    keys whose spend moved most, and the top model's share, in plain sentences. Visibility as
    for anomalies."""
    report = await insights.summary(session, actor, org_id, first=first, last=last, now=now)
    return SummaryOut.of(report)
