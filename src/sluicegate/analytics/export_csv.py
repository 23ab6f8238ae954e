"""CSV forms of the analytics views, written CHUNK rows at a time as the answer streams: the
activity series (a row per bucket and group), the members table (a row per member), and a
member's or a key's series by model. Numbers are the JSON answer's, to the nano-USD."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence

from sluicegate.analytics.service import (
    Activity,
    KeyDetail,
    Labelled,
    MemberDetail,
    Members,
    Point,
    error_rate,
)
from sluicegate.core.money import nanos_to_usd

CHUNK = 500
SERIES_COLUMNS = ("bucket_start", "group_id", "group_label", "cost_usd", "requests", "tokens")
MEMBER_COLUMNS = (
    "user_id",
    "name",
    "email",
    "cost_usd",
    "requests",
    "errors",
    "blocked",
    "error_rate",
    "tokens",
    "prompt_tokens",
    "completion_tokens",
    "key_count",
)
# A spreadsheet runs a cell starting with one of these as a formula (the ledger's CSV rule): text
# from requests and names gets a leading apostrophe so it is shown, never executed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Row = Sequence[object]


def text_cell(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _instant(point: Point) -> str:
    return point.bucket_start.isoformat().replace("+00:00", "Z")


async def _chunks(header: Row, rows: Iterable[Row]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    pending = 0
    for row in rows:
        writer.writerow(row)
        pending += 1
        if pending == CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def _series_rows(series: list[Point], groups: list[Labelled]) -> Iterable[Row]:
    labels = {group.id: group.label for group in groups}
    for point in series:
        label = labels.get(point.group_id, "") if point.group_id is not None else ""
        yield (
            _instant(point),
            text_cell(point.group_id),
            text_cell(label),
            nanos_to_usd(point.sums.cost_nusd),
            point.sums.requests,
            point.sums.tokens,
        )


def activity_csv(activity: Activity) -> AsyncIterator[str]:
    """A row per bucket and group with usage, buckets in order (as the JSON `series`)."""
    return _chunks(SERIES_COLUMNS, _series_rows(activity.series, activity.groups))


def member_csv(detail: MemberDetail) -> AsyncIterator[str]:
    """The member's usage per bucket and model."""
    return _chunks(SERIES_COLUMNS, _series_rows(detail.series, detail.by_model))


def key_csv(detail: KeyDetail) -> AsyncIterator[str]:
    """The key's usage per bucket and model."""
    return _chunks(SERIES_COLUMNS, _series_rows(detail.series, detail.by_model))


def members_csv(members: Members) -> AsyncIterator[str]:
    """A row per member with usage, the largest spend first (as the JSON `items`)."""
    rows = (
        (
            member.user_id,
            text_cell(member.name),
            text_cell(member.email),
            nanos_to_usd(member.sums.cost_nusd),
            member.sums.requests,
            member.sums.errors,
            member.sums.blocked,
            error_rate(member.sums),
            member.sums.tokens,
            member.sums.prompt_tokens,
            member.sums.completion_tokens,
            member.key_count,
        )
        for member in members.members
    )
    return _chunks(MEMBER_COLUMNS, rows)
