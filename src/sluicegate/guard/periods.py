"""Budget periods: calendar day, week (Monday first) and month in the org's timezone, and total.

A period starts at local midnight. Where a DST change skips midnight, the day starts at the
transition (the first instant of that local date), so consecutive periods always tile time."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _first_day(period: str, today: date) -> tuple[date, date]:
    if period == "day":
        return today, today + timedelta(days=1)
    if period == "week":
        start = today - timedelta(days=today.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = today.replace(day=1)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    raise ValueError(f"{period!r} is not a calendar period")


def period_bounds(period: str, zone: ZoneInfo, now: datetime) -> tuple[datetime, datetime] | None:
    """[start, end) in UTC of the period containing `now`; None for `total`."""
    if period == "total":
        return None
    start_day, end_day = _first_day(period, now.astimezone(zone).date())
    # Every local time of a date comes at or after that date's (resolved) midnight, so `now`
    # falls inside [start, end).
    return _local_midnight(start_day, zone), _local_midnight(end_day, zone)
