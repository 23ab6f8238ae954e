"""The time window of an analytics query and its buckets: `from`/`to` as dates read in a timezone
(both inclusive) or RFC 3339 instants (`to` exclusive), any IANA zone, and the buckets of a
granularity (hour, day, week from Monday, month) as UTC instants computed in that zone, so a DST
day is 23 or 25 hours long. Every boundary is a multiple of 15 minutes in UTC: each bucket is an
exact union of 15-minute rollup buckets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from sluicegate.core.errors import InvalidInput
from sluicegate.core.timezones import zone

GRANULARITIES = ("hour", "day", "week", "month")
DEFAULT_GRANULARITY = "day"
# Without `from`, a window is this many local days, the last one being `to` (today by default).
DEFAULT_DAYS = 30
# Hourly buckets over a leap year (8,784, plus a DST hour) fit; hourly over longer does not.
MAX_BUCKETS = 9000
# Usage is recorded from the present on; these bounds keep local dates far from datetime's
# limits in every zone.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)
HOUR = timedelta(hours=1)
# About the shortest length of each granularity's buckets, to refuse a window with far too many
# buckets before enumerating them (a DST day is 23 hours, February 28 days); the exact count is
# checked once they are enumerated.
_SHORTEST = {
    "hour": HOUR,
    "day": timedelta(hours=23),
    "week": timedelta(days=7) - HOUR,
    "month": timedelta(days=28) - HOUR,
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INSTANT = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})"
)

Bound = date | datetime


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in UTC, read in `timezone`, cut into buckets: bucket i spans
    [starts[i], starts[i + 1]) and the last one ends at `end`. A first or last bucket the window
    cuts short starts or ends where the window does."""

    start: datetime
    end: datetime
    timezone: str
    granularity: str
    starts: tuple[datetime, ...]
    # The local dates of every boundary (the starts, then the end) when each one is the first
    # instant of its local date; None otherwise (hourly buckets, instants inside a day).
    local_days: tuple[date, ...] | None

    @property
    def bounds(self) -> list[tuple[datetime, datetime]]:
        edges = (*self.starts, self.end)
        return list(pairwise(edges))

    @property
    def day_bounds(self) -> list[tuple[date, date]]:
        """Each bucket as [first local date, first local date after it)."""
        if self.local_days is None:
            raise ValueError("this window's buckets are not whole local days")
        days = self.local_days
        return list(pairwise(days))


def resolve_window(
    *,
    since: str | None,
    until: str | None,
    timezone: str | None,
    granularity: str | None,
    org_timezone: str,
    now: datetime,
) -> Window:
    """The window a query names; 422 naming the field for anything it cannot be. Without `to`,
    the window ends with today (in the zone); without `from`, it starts DEFAULT_DAYS days before
    its end."""
    name = timezone or org_timezone
    try:
        tz = zone(name)
    except ValueError as exc:
        raise InvalidInput(f"timezone: {exc}", details={"field": "timezone"}) from None
    kind = granularity or DEFAULT_GRANULARITY
    if kind not in GRANULARITIES:
        raise InvalidInput(
            f"granularity: must be one of {', '.join(GRANULARITIES)}",
            details={"field": "granularity"},
        )
    first, last = parse_bound(since, "from"), parse_bound(until, "to")
    if last is None:
        last = now.astimezone(tz).date()
    if first is None:
        if isinstance(last, datetime):
            first = last - timedelta(days=DEFAULT_DAYS)
        else:
            first = last - timedelta(days=DEFAULT_DAYS - 1)
    start = _instant(first, tz, "from", next_day=False)
    end = _instant(last, tz, "to", next_day=True)
    if start >= end:
        raise InvalidInput(
            "from: must be before `to` (dates are inclusive, an instant in `to` exclusive)",
            details={"field": "from"},
        )
    _too_many_buckets(kind, end - start, start, end)
    starts = tuple(_starts(kind, start, end, tz))
    _too_many_buckets(kind, None, start, end, count=len(starts))
    for boundary in (*starts, end):
        if not _on_quarter(boundary):
            raise InvalidInput(
                f"timezone: {name} has a UTC offset that is not a multiple of 15 minutes at "
                f"{boundary.isoformat()}, so its buckets cannot be summed exactly; choose "
                "another window or timezone",
                details={"field": "timezone"},
            )
    return Window(start, end, name, kind, starts, _local_days((*starts, end), tz))


def parse_bound(value: str | None, field: str) -> Bound | None:
    """A date (YYYY-MM-DD) or an RFC 3339 instant with an offset, told apart by shape."""
    if value is None or value == "":
        return None
    text = value.strip()
    instant = _INSTANT.fullmatch(text)
    # datetime holds microseconds and drops the digits past them: 00:00:00.000000001 would be
    # read as midnight, an instant on a quarter hour it is not.
    if instant and (instant.group(2) or "")[7:].strip("0"):
        raise _not_on_quarter(field)
    try:
        if _DATE.fullmatch(text):
            return date.fromisoformat(text)
        if instant:
            return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{field}: {value!r} is not a date or instant that exists", details={"field": field}
        ) from None
    raise InvalidInput(
        f"{field}: must be a date (YYYY-MM-DD, read in `timezone`) or an RFC 3339 instant with "
        "an offset, e.g. 2026-11-30T08:00:00Z",
        details={"field": field},
    )


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local date, in UTC: its midnight, or, where a DST change skips
    midnight, the moment of the change (what local midnight names with fold=0)."""
    instant = datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
    # A gap that began before midnight: step back to its first quarter hour of `day`.
    while (instant - QUARTER).astimezone(tz).date() >= day:
        instant -= QUARTER
    return instant


def _instant(bound: Bound, tz: ZoneInfo, field: str, *, next_day: bool) -> datetime:
    if isinstance(bound, datetime):
        instant = bound
    else:
        if not EARLIEST.date() <= bound < LATEST.date():
            raise _out_of_range(field)
        instant = day_start(bound + timedelta(days=1) if next_day else bound, tz)
    if not EARLIEST <= instant <= LATEST:
        raise _out_of_range(field)
    if not _on_quarter(instant):
        raise _not_on_quarter(field)
    return instant


def _not_on_quarter(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: an instant must be on a quarter hour in UTC (:00, :15, :30 or :45, no "
        "seconds): usage is summed in 15-minute buckets",
        details={"field": field},
    )


def _out_of_range(field: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: must lie between {EARLIEST.date()} and {LATEST.date()}",
        details={"field": field},
    )


def _too_many_buckets(
    kind: str, span: timedelta | None, start: datetime, end: datetime, count: int = 0
) -> None:
    if span is not None:
        count = int(span / _SHORTEST[kind])
    if count > MAX_BUCKETS:
        raise InvalidInput(
            f"granularity: {kind} buckets from {start.isoformat()} to {end.isoformat()} would "
            f"be about {count:,}, more than {MAX_BUCKETS:,}; choose a coarser granularity or a "
            "shorter window",
            details={"field": "granularity", "max_buckets": MAX_BUCKETS},
        )


def _on_quarter(instant: datetime) -> bool:
    utc = instant.astimezone(UTC)
    return utc.minute % 15 == 0 and utc.second == 0 and utc.microsecond == 0


def _starts(kind: str, start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    yield start
    boundaries = _hours(start, end, tz) if kind == "hour" else _periods(kind, start, end, tz)
    for boundary in boundaries:
        if boundary >= end:
            return
        if boundary > start:
            yield boundary


def _periods(kind: str, start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    """First instants of the local days, Mondays or first days of a month after `start`."""
    day = start.astimezone(tz).date()
    if kind == "week":
        day -= timedelta(days=day.weekday())
    elif kind == "month":
        day = day.replace(day=1)
    while True:
        if kind == "day":
            day += timedelta(days=1)
        elif kind == "week":
            day += timedelta(days=7)
        else:
            day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        boundary = day_start(day, tz)
        yield boundary
        if boundary >= end:
            return


def _hours(start: datetime, end: datetime, tz: ZoneInfo) -> Iterator[datetime]:
    """The instants after `start` at which the local clock shows a whole hour. While the UTC
    offset stays the same they are an hour apart; across a change of offset (DST, or a zone
    moving by 30 minutes) the next one is searched quarter hour by quarter hour."""
    instant = start + QUARTER
    while instant < end and instant.astimezone(tz).minute != 0:
        instant += QUARTER
    while instant < end:
        yield instant
        after = instant + HOUR
        if after.astimezone(tz).utcoffset() == instant.astimezone(tz).utcoffset():
            instant = after
            continue
        instant += QUARTER
        while instant < end and instant.astimezone(tz).minute != 0:
            instant += QUARTER
    yield end


def _local_days(boundaries: tuple[datetime, ...], tz: ZoneInfo) -> tuple[date, ...] | None:
    days = []
    for boundary in boundaries:
        day = boundary.astimezone(tz).date()
        if day_start(day, tz) != boundary:
            return None
        days.append(day)
    return tuple(days)
