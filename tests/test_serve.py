"""`sluicegate serve` under real uvicorn, reached over loopback."""

from __future__ import annotations

from pathlib import Path

import httpx

from sluicegate.settings import Settings
from tests.conftest import GatewayStarter, make_settings


def test_zero_configuration_serve_is_healthy_and_ready(
    start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = start_gateway(cwd=tmp_path)
    assert httpx.get(gateway.base_url + "/healthz").status_code == 200
    ready = httpx.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "in-process"}
    assert (tmp_path / "sluicegate.db").is_file()


def test_serve_on_each_backend_is_ready(start_gateway: GatewayStarter, settings: Settings) -> None:
    gateway = start_gateway(settings)
    ready = httpx.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


def _readyz_count(base_url: str) -> float:
    text = httpx.get(base_url + "/metrics").text
    prefix = 'sluicegate_http_requests_total{method="GET",route="/readyz",status="200"}'
    line = next((line for line in text.splitlines() if line.startswith(prefix)), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def test_metrics_add_up_across_workers(
    start_gateway: GatewayStarter, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Each scrape lands on either worker; the counts must be the sum over both."""
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix
    )
    gateway = start_gateway(settings, args=("--workers", "2"))
    # /readyz, not /healthz: a start-up probe of /healthz that timed out on a busy machine can
    # still be counted later, but nothing else calls /readyz.
    before = _readyz_count(gateway.base_url)
    hits = 40
    for _ in range(hits):
        # A new connection each time, so the kernel spreads requests over both workers.
        assert httpx.get(gateway.base_url + "/readyz").status_code == 200
    assert _readyz_count(gateway.base_url) - before == hits
