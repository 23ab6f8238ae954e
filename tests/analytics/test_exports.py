"""Exports of the analytics views: CSV (streamed, a header row, rows that add up to the JSON
totals to the nano-USD, formulas shown as text) and PDF reports whose first page names the org
and states the total spend as the JSON does."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pypdf
from fastapi.responses import StreamingResponse

from sluicegate.analytics import export_csv
from sluicegate.analytics import routes as analytics_routes
from sluicegate.core.money import nanos_to_usd, usd_to_nanos
from tests.admin import ok
from tests.analytics.conftest import (
    DAY_1,
    MEMBER1_COST,
    MEMBER2_COST,
    TOTAL_COST,
    WINDOW,
    World,
    event,
    store,
)

SERIES_HEADER = ["bucket_start", "group_id", "group_label", "cost_usd", "requests", "tokens"]
MEMBERS_HEADER = [
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
]


def csv_rows(response: Any, header: list[str]) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="')
    # Streamed: no length announced up front.
    assert "content-length" not in response.headers
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == header
    return [dict(zip(header, line, strict=True)) for line in lines[1:]]


def cost_of(rows: list[dict[str, str]]) -> int:
    return sum(usd_to_nanos(row["cost_usd"]) for row in rows)


async def test_activity_csv_is_the_json_series(world: World) -> None:
    params = {**WINDOW, "groupBy": "model"}
    body = ok(await world.owner.get(world.api("activity"), params=params))
    response = await world.owner.get(world.api("activity.csv"), params=params)
    assert f'filename="activity-{world.org_id}.csv"' in response.headers["content-disposition"]
    rows = csv_rows(response, SERIES_HEADER)
    assert cost_of(rows) == TOTAL_COST == usd_to_nanos(body["totals"]["cost_usd"])
    assert sum(int(row["requests"]) for row in rows) == body["totals"]["requests"]
    assert sum(int(row["tokens"]) for row in rows) == body["totals"]["tokens"]
    labels = {group["id"]: group["label"] for group in body["groups"]}
    assert [(r["bucket_start"], r["group_id"], r["group_label"], r["cost_usd"]) for r in rows] == [
        (p["bucket_start"], p["group_id"], labels[p["group_id"]], p["cost_usd"])
        for p in body["series"]
    ]
    # Without groupBy: one row per bucket with usage, no group.
    plain = csv_rows(await world.owner.get(world.api("activity.csv"), params=WINDOW), SERIES_HEADER)
    assert [(r["bucket_start"], r["group_id"]) for r in plain] == [
        ("2026-02-09T23:00:00Z", ""),
        ("2026-02-10T23:00:00Z", ""),
    ]
    assert cost_of(plain) == TOTAL_COST


async def test_members_csv_is_every_member_by_spend(world: World) -> None:
    body = ok(await world.owner.get(world.api("members"), params={**WINDOW, "limit": 1}))
    rows = csv_rows(await world.owner.get(world.api("members.csv"), params=WINDOW), MEMBERS_HEADER)
    # Every member, not a page.
    assert [row["user_id"] for row in rows] == [world.member1_id, world.member2_id, world.owner_id]
    assert cost_of(rows) == TOTAL_COST == usd_to_nanos(body["totals"]["cost_usd"])
    assert sum(int(row["requests"]) for row in rows) == body["totals"]["requests"]
    one = rows[0]
    assert (one["name"], one["cost_usd"], one["requests"], one["errors"], one["blocked"]) == (
        "Member One",
        nanos_to_usd(MEMBER1_COST),
        "7",
        "1",
        "1",
    )
    assert (one["error_rate"], one["tokens"], one["key_count"]) == ("0.1429", "2850", "2")


async def test_member_and_key_csv_are_their_series_by_model(world: World) -> None:
    member = ok(await world.owner.get(world.api(f"members/{world.member1_id}"), params=WINDOW))
    rows = csv_rows(
        await world.owner.get(world.api(f"members/{world.member1_id}.csv"), params=WINDOW),
        SERIES_HEADER,
    )
    assert cost_of(rows) == MEMBER1_COST == usd_to_nanos(member["cards"]["total_spend_usd"])
    assert [(r["group_id"], r["cost_usd"]) for r in rows] == [
        ("gpt-4o-mini", "0.003000000"),
        ("claude-sonnet", "0.010000000"),
    ]
    key = ok(await world.owner.get(world.api(f"keys/{world.key2}"), params=WINDOW))
    response = await world.owner.get(world.api(f"keys/{world.key2}.csv"), params=WINDOW)
    assert f'filename="key-{world.key2}.csv"' in response.headers["content-disposition"]
    rows = csv_rows(response, SERIES_HEADER)
    assert cost_of(rows) == MEMBER2_COST == usd_to_nanos(key["totals"]["cost_usd"])
    assert sum(int(r["requests"]) for r in rows) == key["totals"]["requests"] == 4
    assert {r["group_label"] for r in rows} == {"gpt-4o-mini"}


async def test_a_formula_in_a_model_or_app_name_is_exported_as_text(world: World) -> None:
    sneaky = event(
        world.org_id,
        world.team_b,
        world.key2,
        world.member2_id,
        DAY_1,
        model="=HYPERLINK(1)",
        app="+cmd",
        cost=1,
    )
    await store(world.runtime, [sneaky])
    rows = csv_rows(
        await world.owner.get(world.api("activity.csv"), params={**WINDOW, "groupBy": "app"}),
        SERIES_HEADER,
    )
    assert "'+cmd" in {row["group_id"] for row in rows}
    rows = csv_rows(
        await world.owner.get(world.api(f"keys/{world.key2}.csv"), params=WINDOW), SERIES_HEADER
    )
    assert "'=HYPERLINK(1)" in {row["group_label"] for row in rows}


async def test_a_long_csv_is_streamed_in_chunks(world: World) -> None:
    hours = export_csv.CHUNK + 100
    start = DAY_1 - timedelta(days=30)
    usage = [
        event(
            world.org_id,
            world.team_b,
            world.key2,
            world.member2_id,
            start + i * timedelta(hours=1),
            cost=1000 + i,
        )
        for i in range(hours)
    ]
    await store(world.runtime, usage)
    params = {
        "from": start.isoformat(),
        "to": (start + hours * timedelta(hours=1)).isoformat(),
        "granularity": "hour",
    }
    body = ok(await world.owner.get(world.api("activity"), params=params))
    assert len(body["series"]) == hours
    messages = await asgi_get(world, world.api("activity.csv"), params)
    assert messages[0]["status"] == 200
    assert b"content-length" not in dict(messages[0]["headers"])
    chunks = [m["body"] for m in messages[1:] if m["body"]]
    assert len(chunks) == 2  # CHUNK rows (and the header), then the rest
    text = b"".join(chunks).decode()
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == SERIES_HEADER and len(lines) == hours + 1
    assert len(list(csv.reader(io.StringIO(chunks[0].decode())))) == export_csv.CHUNK + 1
    assert sum(usd_to_nanos(line[3]) for line in lines[1:]) == sum(e["cost_nusd"] for e in usage)
    # Every CSV route answers with a streamed response.
    csv_routes = [route for route in analytics_routes.router.routes if route.path.endswith(".csv")]
    assert len(csv_routes) == 4
    assert all(route.response_class is StreamingResponse for route in csv_routes)


async def asgi_get(world: World, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The ASGI messages the app sends for a GET: the start, then each body chunk as it was sent
    (httpx's ASGI transport joins the chunks)."""
    app = world.client._transport.app  # type: ignore[attr-defined]
    sent: list[dict[str, Any]] = []
    token = world.owner._headers(None)["authorization"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": urlencode(params).encode(),
        "headers": [(b"host", b"gateway.test"), (b"authorization", token.encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("gateway.test", 80),
        "root_path": "",
    }

    requested, done = False, asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays connected until the whole body is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    return sent


def first_page(response: Any, name: str) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == f'attachment; filename="{name}.pdf"'
    assert response.content.startswith(b"%PDF-")
    return pypdf.PdfReader(io.BytesIO(response.content)).pages[0].extract_text()


async def test_pdf_reports_name_the_org_and_state_the_total_spend(world: World) -> None:
    params = {**WINDOW, "groupBy": "model"}
    text = first_page(
        await world.owner.get(world.api("activity.pdf"), params=params),
        f"activity-{world.org_id}",
    )
    assert "Activity" in text and "Acme" in text
    assert nanos_to_usd(TOTAL_COST) in text  # 0.028000000
    assert "2026-02-10 to 2026-02-11 (inclusive), Europe/Berlin, by day" in text
    assert "gpt-4o-mini" in text and "claude-sonnet" in text

    text = first_page(
        await world.owner.get(world.api("members.pdf"), params=WINDOW), f"members-{world.org_id}"
    )
    assert "Acme" in text and nanos_to_usd(TOTAL_COST) in text
    assert "Member One" in text and nanos_to_usd(MEMBER1_COST) in text

    text = first_page(
        await world.owner.get(world.api(f"members/{world.member1_id}.pdf"), params=WINDOW),
        f"member-{world.member1_id}",
    )
    assert "Acme" in text and "Member One" in text
    assert nanos_to_usd(MEMBER1_COST) in text and "claude-sonnet" in text

    text = first_page(
        await world.owner.get(world.api(f"keys/{world.key2}.pdf"), params=WINDOW),
        f"key-{world.key2}",
    )
    assert "Acme" in text and "two (sk-sg-" in text
    assert nanos_to_usd(MEMBER2_COST) in text


async def test_pdf_of_a_window_without_usage_and_of_hours_in_another_zone(world: World) -> None:
    empty = {"from": "2025-01-01", "to": "2025-01-31"}
    text = first_page(
        await world.owner.get(world.api("members.pdf"), params=empty), f"members-{world.org_id}"
    )
    assert "Acme" in text and "0.000000000" in text and "No usage in this window." in text
    # Hourly buckets from an instant in Kathmandu: the chart draws a line past BARS_UP_TO.
    hours = {
        "from": "2026-02-08T00:00:00Z",
        "to": "2026-02-14T00:00:00Z",
        "granularity": "hour",
        "timezone": "Asia/Kathmandu",
        "groupBy": "key",
    }
    text = first_page(
        await world.owner.get(world.api("activity.pdf"), params=hours), f"activity-{world.org_id}"
    )
    assert "Acme" in text and nanos_to_usd(TOTAL_COST) in text
    assert "2026-02-08 05:45 to 2026-02-14 05:45 (exclusive), Asia/Kathmandu, by hour" in text
