"""The app shell: health, readiness, metrics, request ids, JSON logs, the error shape."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from sluicegate.app import create_app
from sluicegate.core.errors import NotFound
from sluicegate.core.logs import REQUEST_ID, JsonFormatter
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import make_settings


async def test_healthz_answers(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_reports_each_dependency(app_client: httpx.AsyncClient, backend: str) -> None:
    response = await app_client.get("/readyz")
    assert response.status_code == 200, response.text
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"] == ("ok" if backend == "postgres" else "in-process")


async def _client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime.build(settings)
    app = create_app(settings, runtime)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
                yield client
    finally:
        await runtime.close()


async def test_readyz_names_redis_when_it_is_down(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0")
    async for client in _client_for(settings):
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["down"] == ["redis"]
        assert body["checks"]["redis"].startswith("down:")
        assert body["checks"]["database"] == "ok"


async def test_readyz_names_the_database_when_it_is_down() -> None:
    settings = make_settings(database_url="postgresql+asyncpg://nobody@127.0.0.1:1/x")
    async for client in _client_for(settings):
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["down"] == ["database"]


async def test_metrics_count_requests_by_route_template_and_status(
    app_client: httpx.AsyncClient,
) -> None:
    await app_client.get("/healthz")
    await app_client.get("/no/such/path/12345")
    response = await app_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'sluicegate_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'sluicegate_http_requests_total{method="GET",route="unmatched",status="404"}' in text
    assert "/no/such/path" not in text  # raw paths never become labels
    assert 'sluicegate_http_request_duration_seconds_bucket{le="0.005",method="GET"' in text
    assert "# TYPE sluicegate_upstream_errors_total counter" in text


async def test_every_response_carries_a_request_id(app_client: httpx.AsyncClient) -> None:
    generated = await app_client.get("/healthz")
    assert generated.headers["x-request-id"].startswith("req_")
    kept = await app_client.get("/healthz", headers={"x-request-id": "trace-abc.123"})
    assert kept.headers["x-request-id"] == "trace-abc.123"
    replaced = await app_client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"].startswith("req_")
    longest = "t" * 40
    kept = await app_client.get("/healthz", headers={"x-request-id": longest})
    assert kept.headers["x-request-id"] == longest
    too_long = await app_client.get("/healthz", headers={"x-request-id": longest + "t"})
    assert too_long.headers["x-request-id"].startswith("req_")


@pytest.fixture
def access_lines() -> AsyncIterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sluicegate.access")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


async def test_access_log_is_json_with_the_request_id(
    app_client: httpx.AsyncClient, access_lines: io.StringIO
) -> None:
    response = await app_client.get("/does-not-exist")
    lines = [orjson.loads(line) for line in access_lines.getvalue().splitlines()]
    entry = next(line for line in lines if line["message"].startswith("GET /does-not-exist"))
    assert entry["request_id"] == response.headers["x-request-id"]
    assert entry["status"] == 404
    assert entry["route"] == "unmatched"
    assert entry["level"] == "info"
    assert isinstance(entry["duration_ms"], float)


def test_json_formatter_includes_extras_and_exceptions() -> None:
    token = REQUEST_ID.set("req_test")
    try:
        try:
            raise ValueError("broken")
        except ValueError:
            record = logging.getLogger("t").makeRecord(
                "t",
                logging.ERROR,
                __file__,
                1,
                "failed %s",
                ("x",),
                exc_info=True,
                extra={"org_id": "org_1"},
            )
            import sys

            record.exc_info = sys.exc_info()
        line = orjson.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["message"] == "failed x"
    assert line["request_id"] == "req_test"
    assert line["org_id"] == "org_1"
    assert "ValueError: broken" in line["exception"]


async def test_errors_render_in_the_admin_shape(settings: Settings, runtime: Runtime) -> None:
    app = create_app(settings, runtime)

    @app.get("/api/v1/example/{thing_id}")
    async def example(thing_id: int) -> None:
        raise NotFound(f"no thing {thing_id}", details={"thing_id": thing_id})

    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client,
    ):
        missing = await client.get("/api/v1/example/7")
        invalid = await client.get("/api/v1/example/seven")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {"code": "not_found", "message": "no thing 7", "details": {"thing_id": 7}}
    }
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert error["code"] == "invalid_input"
    assert error["message"].startswith("thing_id:")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_api_documentation_pages_load_everything_from_the_gateway(
    app_client: httpx.AsyncClient, page: str
) -> None:
    """No CDN: every script, style and icon the page names is served here (works offline)."""
    import re

    answer = await app_client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert "https://" not in html and "http://" not in html
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets)
    for asset in assets:
        loaded = await app_client.get(asset)
        assert loaded.status_code == 200, asset
        assert loaded.content
    assert (await app_client.get("/openapi.json")).status_code == 200


async def test_metrics_can_require_a_token(sqlite_url: str) -> None:
    settings = make_settings(database_url=sqlite_url, metrics_token="scrape-" + "x" * 24)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client,
    ):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthenticated"
        wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        headers = {"authorization": "Bearer scrape-" + "x" * 24}
        scraped = await client.get("/metrics", headers=headers)
        assert scraped.status_code == 200
        assert "sluicegate_http_requests_total" in scraped.text


async def test_oversized_headers_and_encoded_bodies_are_refused_before_any_endpoint(
    app_client: httpx.AsyncClient,
) -> None:
    big = {"x-padding": "p" * (40 * 1024)}
    for path in ("/v1/chat/completions", "/api/v1/auth/login"):
        answer = await app_client.post(path, json={}, headers=big)
        assert answer.status_code == 431
        assert answer.json()["error"]["code"] == "headers_too_large"
        assert answer.headers["x-request-id"]
        gzipped = await app_client.post(path, json={}, headers={"content-encoding": "gzip"})
        assert gzipped.status_code == 415
        assert gzipped.json()["error"]["code"] == "unsupported_content_encoding"
    assert (await app_client.get("/healthz", headers={"x-padding": "p" * 1024})).status_code == 200
