"""Shapes of the activity feed (a line per request, metadata only), the CSV form of the feed, and
the time bounds the feed and insights take: a date (`YYYY-MM-DD`) or an RFC 3339 instant."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator, TypeAdapter, ValidationError, WithJsonSchema

from sluicegate.analytics.feed import ExportIncomplete, FeedEntry
from sluicegate.api.fields import Moment
from sluicegate.core.money import nanos_to_usd

Outcome = Literal["ok", "error", "blocked"]
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MOMENT: TypeAdapter[datetime] = TypeAdapter(Moment)


def _day(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not (isinstance(value, str) and _DATE_ONLY.fullmatch(value)):
        raise ValueError("must be a date, YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date that exists, YYYY-MM-DD") from None


def _day_or_instant(value: Any) -> date | datetime:
    """A bare date is a day (read in the org's timezone); anything else must be an instant
    with an offset. Told apart by shape: midnight UTC is an instant, not a date."""
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        return _day(value)
    try:
        return _MOMENT.validate_python(value)
    except ValidationError:
        raise ValueError(
            "must be a date (YYYY-MM-DD) or an RFC 3339 instant with an offset, e.g. "
            "2026-11-30T08:00:00Z"
        ) from None


# A day in the org's timezone.
Day = Annotated[
    date,
    PlainValidator(_day),
    WithJsonSchema({"type": "string", "format": "date", "examples": ["2026-11-30"]}),
]
# A date (a whole day in the org's timezone) or an RFC 3339 instant.
DayOrInstant = Annotated[
    date | datetime,
    PlainValidator(_day_or_instant),
    WithJsonSchema(
        {
            "type": "string",
            "description": "a date YYYY-MM-DD in the org's timezone, or an RFC 3339 instant",
            "examples": ["2026-11-30", "2026-11-30T08:00:00Z"],
        }
    ),
]


class KeyRef(BaseModel):
    id: str
    name: str | None = Field(description="null when the key no longer exists")
    prefix: str | None


class MemberRef(BaseModel):
    id: str
    name: str | None
    email: str | None


class GroupRef(BaseModel):
    id: str
    name: str | None


class Tokens(BaseModel):
    prompt: int
    completion: int
    cached: int = Field(description="prompt tokens served from the provider's cache")


class FeedEntryOut(BaseModel):
    request_id: str
    created_at: datetime
    key: KeyRef
    member: MemberRef = Field(description="the key's owner, to whom the spend is attributed")
    group: GroupRef = Field(description="where the spend is attributed")
    requested_model: str
    served_model: str | None
    provider: str | None
    app: str | None = Field(description="from the request's HTTP-Referer or X-Title")
    status: Outcome = Field(description="blocked: stopped by a guardrail before any provider")
    status_code: int
    error_type: str | None
    stream: bool
    tokens: Tokens
    cost_usd: str
    latency_ms: int
    ttft_ms: int | None = Field(description="time to the first token (streams)")
    usage_estimated: bool = Field(description="tokens estimated: the provider reported none")
    deployment: str | None = Field(
        description="the deployment that served (e.g. openai-eu/gpt-4o-mini); null when the "
        "request reached none"
    )
    attempts: int | None = Field(description="upstream attempts made, retries and fallbacks too")
    fallback: bool | None = Field(
        description="true when the deployment that served was not the requested model's first"
    )
    fallback_model: str | None = Field(
        description="the model that served when a fallback model did; else null"
    )

    @classmethod
    def of(cls, entry: FeedEntry) -> FeedEntryOut:
        return cls(
            request_id=entry.request_id,
            created_at=entry.created_at,
            key=KeyRef(id=entry.key_id, name=entry.key_name, prefix=entry.key_prefix),
            member=MemberRef(id=entry.user_id, name=entry.member_name, email=entry.member_email),
            group=GroupRef(id=entry.group_id, name=entry.group_name),
            requested_model=entry.requested_model,
            served_model=entry.served_model,
            provider=entry.provider,
            app=entry.app,
            status=entry.outcome,
            status_code=entry.status_code,
            error_type=entry.error_type,
            stream=entry.stream,
            tokens=Tokens(
                prompt=entry.prompt_tokens,
                completion=entry.completion_tokens,
                cached=entry.cached_tokens,
            ),
            cost_usd=nanos_to_usd(entry.cost_nusd),
            latency_ms=entry.latency_ms,
            ttft_ms=entry.ttft_ms,
            usage_estimated=entry.usage_estimated,
            deployment=entry.deployment,
            attempts=entry.attempts,
            fallback=entry.fallback,
            fallback_model=entry.fallback_model,
        )


# --- CSV -----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "request_id",
    "created_at",
    "key_id",
    "key_name",
    "key_prefix",
    "user_id",
    "member_name",
    "member_email",
    "group_id",
    "group_name",
    "requested_model",
    "served_model",
    "provider",
    "app",
    "status",
    "status_code",
    "error_type",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "usage_estimated",
    "deployment",
    "attempts",
    "fallback",
    "fallback_model",
)
# The last line of an export the database cut short: a reader (or a person) sees the file is
# incomplete instead of taking a truncated file for the whole history.
INCOMPLETE_MARKER = "# export incomplete:"
# A spreadsheet runs a cell starting with one of these as a formula (the ledger's CSV rule):
# text from requests and names gets a leading apostrophe so it is shown, never executed.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _flag(value: bool) -> str:
    return "true" if value else "false"


def csv_row(entry: FeedEntry) -> tuple[object, ...]:
    return (
        entry.request_id,
        entry.created_at.isoformat().replace("+00:00", "Z"),
        entry.key_id,
        text_cell(entry.key_name),
        text_cell(entry.key_prefix),
        entry.user_id,
        text_cell(entry.member_name),
        text_cell(entry.member_email),
        entry.group_id,
        text_cell(entry.group_name),
        text_cell(entry.requested_model),
        text_cell(entry.served_model),
        text_cell(entry.provider),
        text_cell(entry.app),
        entry.outcome,
        entry.status_code,
        text_cell(entry.error_type),
        _flag(entry.stream),
        entry.prompt_tokens,
        entry.completion_tokens,
        entry.cached_tokens,
        nanos_to_usd(entry.cost_nusd),
        entry.latency_ms,
        "" if entry.ttft_ms is None else entry.ttft_ms,
        _flag(entry.usage_estimated),
        text_cell(entry.deployment),
        "" if entry.attempts is None else entry.attempts,
        "" if entry.fallback is None else _flag(entry.fallback),
        text_cell(entry.fallback_model),
    )


async def activity_csv(pages: AsyncIterator[list[FeedEntry]]) -> AsyncIterator[str]:
    """The header, then one chunk of rows per page of the feed; when the database fails mid-way,
    a last line starting with INCOMPLETE_MARKER says so."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    try:
        async for page in pages:
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(csv_row(entry) for entry in page)
            yield buffer.getvalue()
    except ExportIncomplete as exc:
        yield f"{INCOMPLETE_MARKER} {exc.message}\r\n"
