"""Budget periods tile time in any timezone: each instant lies in exactly one period, and a
period starts at the first instant of its local date (DST days included)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.guard.periods import period_bounds

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",  # DST changes at midnight: some local midnights do not exist
    "America/Havana",
    "Pacific/Chatham",
]
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=400)
@given(now=instants, zone=st.sampled_from(ZONES), period=st.sampled_from(["day", "week", "month"]))
def test_periods_contain_now_start_at_a_local_date_and_tile(
    now: datetime, zone: str, period: str
) -> None:
    tz = ZoneInfo(zone)
    bounds = period_bounds(period, tz, now)
    assert bounds is not None
    start, end = bounds
    assert start <= now < end
    # The first instant of a local date: the instant before it is on another date.
    assert (start - timedelta(microseconds=1)).astimezone(tz).date() != start.astimezone(tz).date()
    assert period_bounds(period, tz, end - timedelta(microseconds=1)) == (start, end)
    following = period_bounds(period, tz, end)
    assert following is not None and following[0] == end
    if period == "week":
        assert start.astimezone(tz).weekday() == 0
    if period == "month":
        assert start.astimezone(tz).day == 1


def test_a_kathmandu_day_starts_at_1815_utc() -> None:
    start, end = period_bounds(
        "day", ZoneInfo("Asia/Kathmandu"), datetime(2026, 5, 3, 20, 0, tzinfo=UTC)
    )
    assert (start, end) == (
        datetime(2026, 5, 3, 18, 15, tzinfo=UTC),
        datetime(2026, 5, 4, 18, 15, tzinfo=UTC),
    )


def test_a_dst_day_in_paris_lasts_23_hours() -> None:
    start, end = period_bounds(
        "day", ZoneInfo("Europe/Paris"), datetime(2026, 3, 29, 12, tzinfo=UTC)
    )
    assert end - start == timedelta(hours=23)


@pytest.mark.parametrize("zone", ZONES)
def test_total_has_no_bounds(zone: str) -> None:
    assert period_bounds("total", ZoneInfo(zone), datetime(2026, 1, 1, tzinfo=UTC)) is None
