"""The activity feed over the admin API: newest first with each request's metadata, every filter,
cursor pages that hold every row once (also while rows arrive), the CSV export equal to the JSON
rows and honest about a database failure, and who sees whose requests."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text

from sluicegate.analytics import feed
from sluicegate.analytics.feed import FeedQuery
from sluicegate.analytics.feed_schemas import CSV_COLUMNS, INCOMPLETE_MARKER, activity_csv
from sluicegate.core.actors import Actor
from sluicegate.core.ids import new_id
from sluicegate.core.pagination import encode_cursor
from sluicegate.metering.writer import store_usage
from sluicegate.runtime import Runtime
from tests.admin import Api, all_pages, error, ok
from tests.factories import add_group, join, make_key, make_org

ZONE = "Asia/Kolkata"  # +05:30: a local day is not a UTC day
# The feed's five hours straddle local midnight: 2026-05-05 starts at 2026-05-04T18:30Z there.
START = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Key:
    id: str
    group_id: str
    user_id: str


@dataclass
class World:
    """Org A: groups team and other; an admin and a viewer bound at team; member M homed at
    team with key KM; member N homed at other with key KN; the admin's own key KA in other."""

    runtime: Runtime
    client: httpx.AsyncClient
    org_id: str
    base: str
    team: str
    other: str
    owner: Api
    admin: Api
    viewer: Api
    member: Api
    member2: Api
    km: Key
    kn: Key
    ka: Key

    async def store(self, events: list[dict[str, Any]]) -> None:
        async with self.runtime.unit_of_work() as session:
            await store_usage(session, events)


async def make_world(runtime: Runtime, client: httpx.AsyncClient, zone: str = ZONE) -> World:
    org = await make_org(runtime, client, timezone=zone)
    team = (await add_group(org, "team")).id
    other = (await add_group(org, "other")).id
    admin = await join(org, "admin", team, name="Ada")
    viewer = await join(org, "viewer", team, name="Vic")
    member = await join(org, "member", team, name="Mia")
    member2 = await join(org, "member", other, name="Ned")
    km = await make_key(org, team, name="=mia's key", owner_user_id=member.user_id)
    kn = await make_key(org, other, name="ned's key", owner_user_id=member2.user_id)
    ka = await make_key(org, other, name="ada's key", owner_user_id=admin.user_id)
    return World(
        runtime,
        client,
        org.id,
        org.base,
        team,
        other,
        org.owner,
        admin,
        viewer,
        member,
        member2,
        Key(km.id, team, member.user_id),
        Key(kn.id, other, member2.user_id),
        Key(ka.id, other, admin.user_id),
    )


def usage(
    org_id: str,
    key: Key,
    at: datetime,
    *,
    model: str = "gpt-4o-mini",
    served: str | None = None,
    status: int = 200,
    error_type: str | None = None,
    cost: int = 1_000_000,
    app: str | None = None,
) -> dict[str, Any]:
    """A usage event as the proxy records it (one dict of UsageEvent columns)."""
    return {
        "request_id": new_id("req"),
        "created_at": at,
        "org_id": org_id,
        "group_id": key.group_id,
        "key_id": key.id,
        "user_id": key.user_id,
        "requested_model": model,
        "served_model": served or model,
        "provider": "openai",
        "app": app,
        "prompt_tokens": 10,
        "completion_tokens": 20 if status < 400 else 0,
        "cached_tokens": 2,
        "cost_nusd": cost if status < 400 else 0,
        "latency_ms": 120,
        "ttft_ms": 40,
        "status_code": status,
        "error_type": error_type,
        "stream": True,
        "usage_estimated": False,
        "routing": None,
    }


def feed_events(world: World) -> list[dict[str, Any]]:
    """30 requests over ten hours, some sharing an instant (ordered by request id then)."""
    keys = (world.km, world.kn, world.ka)
    events = []
    for i in range(30):
        at = START + timedelta(minutes=20 * (i // 2))  # two requests per instant
        kind = i % 5
        events.append(
            usage(
                world.org_id,
                keys[i % 3],
                at,
                model="gpt-4o" if i % 4 == 0 else "gpt-4o-mini",
                served="gpt-4o-2024-08-06" if i % 4 == 0 else None,
                status=402 if kind == 3 else 502 if kind == 4 else 429 if i == 7 else 200,
                error_type="budget_exceeded"
                if kind == 3
                else "upstream_error"
                if kind == 4
                else "rate_limited"
                if i == 7
                else None,
                cost=1_000_000 * (i + 1),
                app="=HYPERLINK(evil)" if i == 0 else "notebook",
            )
        )
    return events


def newest_first(events: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(events, key=lambda e: (e["created_at"], e["request_id"]), reverse=True)
    return [e["request_id"] for e in ordered]


@pytest.fixture
async def world(runtime: Runtime, app_client: httpx.AsyncClient) -> World:
    return await make_world(runtime, app_client)


async def activity(api: Api, world: World, **params: Any) -> list[dict[str, Any]]:
    return await all_pages(api, f"{world.base}/activity", {"limit": 500, **params})


# --- order, fields, filters ----------------------------------------------------------------------


async def test_the_feed_is_newest_first_with_each_requests_metadata(world: World) -> None:
    events = feed_events(world)
    await world.store(events)
    page = ok(await world.owner.get(f"{world.base}/activity"))
    assert page["next_cursor"] is None
    assert [item["request_id"] for item in page["items"]] == newest_first(events)
    first = events[0]
    item = next(i for i in page["items"] if i["request_id"] == first["request_id"])
    assert world.member.person is not None
    assert item == {
        "request_id": first["request_id"],
        "created_at": "2026-05-04T15:00:00Z",
        "key": {"id": world.km.id, "name": "=mia's key", "prefix": item["key"]["prefix"]},
        "member": {"id": world.km.user_id, "name": "Mia", "email": world.member.person.email},
        "group": {"id": world.team, "name": "team"},
        "requested_model": "gpt-4o",
        "served_model": "gpt-4o-2024-08-06",
        "provider": "openai",
        "app": "=HYPERLINK(evil)",
        "status": "ok",
        "status_code": 200,
        "error_type": None,
        "stream": True,
        "tokens": {"prompt": 10, "completion": 20, "cached": 2},
        "cost_usd": "0.001000000",
        "latency_ms": 120,
        "ttft_ms": 40,
        "usage_estimated": False,
        "deployment": None,
        "attempts": None,
        "fallback": None,
        "fallback_model": None,
    }
    assert item["key"]["prefix"].startswith("sk-")
    blocked = next(i for i in page["items"] if i["request_id"] == events[3]["request_id"])
    assert (blocked["status"], blocked["status_code"], blocked["error_type"]) == (
        "blocked",
        402,
        "budget_exceeded",
    )


async def test_every_filter_selects_exactly_its_rows(world: World) -> None:
    events = feed_events(world)
    await world.store(events)
    local = ZoneInfo(ZONE)
    day_start = datetime.combine(date(2026, 5, 5), time.min, tzinfo=local)

    def blocked(e: dict[str, Any]) -> bool:
        return e["error_type"] in {"budget_exceeded", "rate_limited"}

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"key_id": world.kn.id}, lambda e: e["key_id"] == world.kn.id),
        ({"user_id": world.km.user_id}, lambda e: e["user_id"] == world.km.user_id),
        ({"model": "gpt-4o"}, lambda e: e["requested_model"] == "gpt-4o"),
        ({"model": "gpt-4o-2024-08-06"}, lambda e: e["served_model"] == "gpt-4o-2024-08-06"),
        ({"status": "ok"}, lambda e: e["status_code"] < 400 and not blocked(e)),
        ({"status": "error"}, lambda e: e["status_code"] >= 400 and not blocked(e)),
        ({"status": "blocked"}, blocked),
        ({"status_code": 429}, lambda e: e["status_code"] == 429),
        ({"status": "blocked", "status_code": 402}, lambda e: e["status_code"] == 402),
        (
            {"from": "2026-05-04T16:00:00Z", "to": "2026-05-04T22:00:00+05:00"},
            lambda e: (
                datetime(2026, 5, 4, 16, tzinfo=UTC)
                <= e["created_at"]
                < datetime(2026, 5, 4, 17, tzinfo=UTC)
            ),
        ),
        ({"from": "2026-05-05"}, lambda e: e["created_at"] >= day_start),
        ({"to": "2026-05-04"}, lambda e: e["created_at"] < day_start),
        (
            {"from": "2026-05-05", "to": "2026-05-05", "key_id": world.km.id, "status": "ok"},
            lambda e: (
                e["created_at"] >= day_start
                and e["key_id"] == world.km.id
                and e["status_code"] < 400
            ),
        ),
    ]
    for params, wanted in cases:
        expected = newest_first([e for e in events if wanted(e)])
        assert expected, params
        got = [item["request_id"] for item in await activity(world.owner, world, **params)]
        assert got == expected, params
    for params in (
        {"status": "failed"},
        {"status_code": 99},
        {"from": "2026-05-05T10:00:00"},  # no offset
        {"from": "2026-02-30"},
        {"from": "2026-05-06", "to": "2026-05-05"},
        {"from": "0001-01-01"},  # before year 1 in UTC
        {"to": "9999-12-31"},
    ):
        problem = error(await world.owner.get(f"{world.base}/activity", params=params), 422)
        assert problem["message"], params


async def test_pages_hold_every_row_once_even_when_rows_arrive_between_reads(
    world: World,
) -> None:
    events = feed_events(world)
    await world.store(events)
    seen: list[str] = []
    arrived: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = ok(await world.owner.get(f"{world.base}/activity", params=params))
        assert len(page["items"]) <= 7
        seen += [item["request_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
        # Newer requests arrive while the pages are read: they belong before the first page.
        late = [usage(world.org_id, world.km, START + timedelta(days=1, seconds=len(arrived)))]
        await world.store(late)
        arrived += [e["request_id"] for e in late]
    assert seen == newest_first(events)
    assert len(arrived) == 4
    everything = [item["request_id"] for item in await activity(world.owner, world)]
    assert everything == list(reversed(arrived)) + newest_first(events)


async def test_limits_are_bounded_and_a_foreign_cursor_is_422(world: World) -> None:
    await world.store(feed_events(world))
    path = f"{world.base}/activity"
    assert len(ok(await world.owner.get(path, params={"limit": 500}))["items"]) == 30
    assert len(ok(await world.owner.get(path))["items"]) == 30  # default 50
    one = ok(await world.owner.get(path, params={"limit": 1}))
    assert len(one["items"]) == 1 and one["next_cursor"]
    for limit in (0, 501):
        assert error(await world.owner.get(path, params={"limit": limit}), 422)
    for cursor in ("not-a-cursor", encode_cursor("no separator"), encode_cursor(7), "x" * 300):
        problem = error(await world.owner.get(path, params={"cursor": cursor}), 422)
        assert "cursor" in problem["message"] or "cursor" in str(problem["details"]), cursor


# --- CSV -----------------------------------------------------------------------------------------


def csv_rows(body: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(body))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def as_csv(item: dict[str, Any]) -> dict[str, str]:
    """A JSON feed item as its CSV row reads (text cells escaped against formulas)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        value = str(value)
        return "'" + value if value.startswith(("=", "+", "-", "@")) else value

    return {
        "request_id": item["request_id"],
        "created_at": cell(
            datetime.fromisoformat(item["created_at"]).isoformat().replace("+00:00", "Z")
        ),
        "key_id": item["key"]["id"],
        "key_name": cell(item["key"]["name"]),
        "key_prefix": cell(item["key"]["prefix"]),
        "user_id": item["member"]["id"],
        "member_name": cell(item["member"]["name"]),
        "member_email": cell(item["member"]["email"]),
        "group_id": item["group"]["id"],
        "group_name": cell(item["group"]["name"]),
        "requested_model": cell(item["requested_model"]),
        "served_model": cell(item["served_model"]),
        "provider": cell(item["provider"]),
        "app": cell(item["app"]),
        "status": item["status"],
        "status_code": str(item["status_code"]),
        "error_type": cell(item["error_type"]),
        "stream": cell(item["stream"]),
        "prompt_tokens": str(item["tokens"]["prompt"]),
        "completion_tokens": str(item["tokens"]["completion"]),
        "cached_tokens": str(item["tokens"]["cached"]),
        "cost_usd": item["cost_usd"],
        "latency_ms": str(item["latency_ms"]),
        "ttft_ms": cell(item["ttft_ms"]),
        "usage_estimated": cell(item["usage_estimated"]),
        "deployment": cell(item["deployment"]),
        "attempts": cell(item["attempts"]),
        "fallback": cell(item["fallback"]),
        "fallback_model": cell(item["fallback_model"]),
    }


async def test_the_csv_holds_exactly_the_json_rows(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "EXPORT_PAGE", 4)  # several pages of the export
    await world.store(feed_events(world))
    for api, params in (
        (world.owner, {}),
        (world.owner, {"status": "ok", "from": "2026-05-05"}),
        (world.admin, {}),
    ):
        response = await api.get(f"{world.base}/activity.csv", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = csv_rows(response.text)
        items = await activity(api, world, **params)
        assert rows == [as_csv(item) for item in items]
        assert rows
    first = next(r for r in csv_rows(response.text) if r["key_id"] == world.km.id)
    assert first["key_name"] == "'=mia's key"


async def test_a_database_failure_mid_export_ends_with_a_line_saying_so(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(feed, "EXPORT_PAGE", 4)
    await world.store(feed_events(world))
    assert world.owner.person is not None
    actor = Actor(world.owner.person.user_id, world.owner.person.email)
    async with world.runtime.unit_of_work() as session:
        pages = await feed.export_activity(session, actor, world.org_id, FeedQuery())
    chunks = activity_csv(pages)
    received = [await anext(chunks), await anext(chunks)]  # the header and the first page
    engine = world.runtime.engine
    async with engine.begin() as connection:
        await connection.execute(text("ALTER TABLE usage_events RENAME TO usage_events_away"))
    try:
        with caplog.at_level(logging.ERROR, logger="sluicegate.analytics"):
            received += [chunk async for chunk in chunks]
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE usage_events_away RENAME TO usage_events"))
    body = "".join(received)
    lines = body.rstrip("\r\n").split("\r\n")
    assert lines[-1].startswith(f"{INCOMPLETE_MARKER} the database failed after 4 rows")
    assert len(lines) == 1 + 4 + 1
    assert any("activity export stopped" in record.getMessage() for record in caplog.records)


# --- who sees what -------------------------------------------------------------------------------


async def test_each_role_sees_the_requests_of_its_subtree_and_its_own(world: World) -> None:
    events = feed_events(world)
    await world.store(events)

    def of(*keys: Key) -> list[str]:
        return newest_first([e for e in events if e["key_id"] in {k.id for k in keys}])

    async def ids(api: Api) -> list[str]:
        return [item["request_id"] for item in await activity(api, world)]

    assert await ids(world.owner) == newest_first(events)
    assert await ids(world.admin) == of(world.km, world.ka)  # team, and the admin's own key
    assert await ids(world.viewer) == of(world.km)
    assert await ids(world.member) == of(world.km)
    assert await ids(world.member2) == of(world.kn)
    csv_ids = [
        r["request_id"]
        for r in csv_rows((await world.member2.get(f"{world.base}/activity.csv")).text)
    ]
    assert csv_ids == of(world.kn)
    ok(await world.owner.patch(world.base, json={"members_see_org_feed": True}))
    assert await ids(world.member2) == newest_first(events)
    assert await ids(world.viewer) == newest_first(events)


async def test_another_orgs_admin_gets_404_on_the_feed_and_insights(
    world: World, runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    other = await make_world(runtime, app_client, "UTC")
    await world.store(feed_events(world))
    for path in ("activity", "activity.csv", "insights/anomalies", "insights/summary"):
        for api in (other.admin, other.owner):
            problem = error(await api.get(f"{world.base}/{path}"), 404)
            assert problem["code"] == "not_found", path
        assert (await world.admin.get(f"{world.base}/{path}")).status_code == 200, path
    own = ok(await other.owner.get(f"{other.base}/activity"))
    assert own["items"] == []
