"""With two uvicorn workers, a key disabled, deleted or rotated through the admin API is refused
by the proxy within one second on every worker (Redis pub/sub invalidation), although every
worker had its context cached (10 s TTL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import make_person
from tests.conftest import GatewayStarter, make_settings
from tests.proxy.conftest import MOCK_KEY_ENV
from tests.support import ServerProcess

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
REQUESTS = 30


def _statuses(base_url: str, key: str) -> set[int]:
    statuses = set()
    for _ in range(REQUESTS):
        # A fresh connection each time, so requests spread over both worker processes.
        response = httpx.post(
            base_url + "/v1/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {key}"},
        )
        statuses.add(response.status_code)
    return statuses


@dataclass
class TwoWorkers:
    gateway: ServerProcess
    headers: dict[str, str]
    base: str  # the org's admin path
    group_id: str

    def admin(self, method: str, path: str, json: object = None) -> httpx.Response:
        return httpx.request(
            method, self.gateway.base_url + path, json=json, headers=self.headers, timeout=10
        )


@pytest.fixture
async def two_workers(
    start_gateway: GatewayStarter,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    providers_file: Path,
) -> AsyncIterator[TwoWorkers]:
    settings = make_settings(
        database_url=postgres_url, redis_url=redis_url, redis_prefix=redis_prefix
    )
    gateway = start_gateway(
        settings,
        env={"SLUICEGATE_PROVIDERS": str(providers_file), **MOCK_KEY_ENV},
        args=("--workers", "2"),
    )
    runtime = Runtime.build(settings)
    try:
        owner = await make_person(runtime)
    finally:
        await runtime.close()
    setup = TwoWorkers(gateway, owner.headers, "", "")
    org = setup.admin("POST", "/api/v1/orgs", {"name": "Acme"}).json()
    setup.base = f"/api/v1/orgs/{org['id']}"
    setup.group_id = setup.admin("POST", f"{setup.base}/groups", {"name": "p"}).json()["id"]
    yield setup


def _disable(setup: TwoWorkers, key: dict) -> None:
    response = setup.admin("PATCH", f"{setup.base}/keys/{key['id']}", {"status": "disabled"})
    assert response.status_code == 200, response.text


def _delete(setup: TwoWorkers, key: dict) -> None:
    assert setup.admin("DELETE", f"{setup.base}/keys/{key['id']}").status_code == 204


def _rotate(setup: TwoWorkers, key: dict) -> None:
    response = setup.admin("POST", f"{setup.base}/keys/{key['id']}/rotate")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "change", [_disable, _delete, _rotate], ids=["disabled", "deleted", "rotated"]
)
async def test_a_changed_key_is_refused_within_a_second_on_every_worker(
    two_workers: TwoWorkers, change: Callable[[TwoWorkers, dict], None]
) -> None:
    setup = two_workers
    key = setup.admin(
        "POST", f"{setup.base}/keys", {"name": "k", "group_id": setup.group_id}
    ).json()
    # Every worker now holds the key's context in its cache (10 s TTL).
    assert await asyncio.to_thread(_statuses, setup.gateway.base_url, key["key"]) == {200}
    await asyncio.to_thread(change, setup, key)
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(_statuses, setup.gateway.base_url, key["key"]) == {401}
