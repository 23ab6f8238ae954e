"""An org built over the admin API for the analytics tests, and its usage stored through the
usage writer (store_usage), as the drain does: rollups and ledger debits come with the rows.

    org (Europe/Berlin): root ── team A ── project A1
                              └─ team B
    owner (root, owns key K0 at the root)
    admin A (admin at team A), viewer B (viewer at team B)
    member 1 (homed at A1; keys K1 and K1b in A1), member 2 (homed at team B; key K2 in B)

USAGE is spread over 2026-02-10 and 2026-02-11 (Berlin); its totals are the constants below.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sluicegate.metering.writer import store_usage
from sluicegate.runtime import Runtime
from tests.admin import Api
from tests.factories import Org, add_group, join, make_key, make_org

ZONE = "Europe/Berlin"
DAY_1 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
DAY_2 = DAY_1 + timedelta(days=1)
WINDOW = {"from": "2026-02-10", "to": "2026-02-11"}
_request_ids = itertools.count()


@dataclass
class World:
    runtime: Runtime
    client: httpx.AsyncClient
    org: Org
    base: str
    org_id: str
    root: str
    team_a: str
    project_a: str
    team_b: str
    owner: Api
    owner_id: str
    admin_a: Api
    admin_a_id: str
    viewer_b: Api
    member1: Api
    member1_id: str
    member2: Api
    member2_id: str
    key0: str
    key1: str
    key1b: str
    key2: str

    def api(self, path: str) -> str:
        return f"{self.base}/analytics/{path}"


async def build_world(
    runtime: Runtime, client: httpx.AsyncClient, name: str = "Acme", zone: str = ZONE
) -> World:
    org = await make_org(runtime, client, name, timezone=zone)
    team_a = (await add_group(org, "Team A")).id
    project_a = (await add_group(org, "Project A1", team_a)).id
    team_b = (await add_group(org, "Team B")).id
    admin_a = await join(org, "admin", team_a, name="Admin A")
    viewer_b = await join(org, "viewer", team_b, name="Viewer B")
    member1 = await join(org, "member", project_a, name="Member One")
    member2 = await join(org, "member", team_b, name="Member Two")
    return World(
        runtime=runtime,
        client=client,
        org=org,
        base=org.base,
        org_id=org.id,
        root=org.root,
        team_a=team_a,
        project_a=project_a,
        team_b=team_b,
        owner=org.owner,
        owner_id=org.owner.user_id,
        admin_a=admin_a,
        admin_a_id=admin_a.user_id,
        viewer_b=viewer_b,
        member1=member1,
        member1_id=member1.user_id,
        member2=member2,
        member2_id=member2.user_id,
        key0=(await make_key(org, org.root, name="root key")).id,
        key1=(await make_key(org, project_a, by=member1, name="one")).id,
        key1b=(await make_key(org, project_a, by=member1, name="one-b")).id,
        key2=(await make_key(org, team_b, by=member2, name="two")).id,
    )


def event(
    org_id: str,
    group_id: str,
    key_id: str,
    user_id: str,
    at: datetime,
    *,
    model: str = "gpt-4o-mini",
    provider: str | None = "openai",
    app: str | None = None,
    cost: int = 0,
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
    status: int = 200,
    error_type: str | None = None,
    latency: int = 100,
    routing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A usage event as the proxy records it (a dict of UsageEvent columns)."""
    return {
        "request_id": f"req_test{next(_request_ids):012d}{secrets.token_hex(4)}",
        "created_at": at,
        "org_id": org_id,
        "group_id": group_id,
        "key_id": key_id,
        "user_id": user_id,
        "requested_model": model,
        "served_model": model,
        "provider": provider,
        "app": app,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_tokens": cached,
        "cost_nusd": cost,
        "latency_ms": latency,
        "ttft_ms": None,
        "status_code": status,
        "error_type": error_type,
        "stream": False,
        "usage_estimated": False,
        "routing": routing,
    }


async def store(runtime: Runtime, events: list[dict[str, Any]]) -> None:
    async with runtime.unit_of_work() as session:
        await store_usage(session, events)


# The usage every world gets (see usage_of). Costs in nano-USD.
TOTAL_COST = 3 * 1_000_000 + 2 * 5_000_000 + 4 * 2_000_000 + 7_000_000
TOTAL_REQUESTS = 12
MEMBER1_COST = 3 * 1_000_000 + 2 * 5_000_000
MEMBER2_COST = 4 * 2_000_000
# The deployments that served it (see usage_of): (cost, requests); '' reached none.
EU, US, CLAUDE = "openai-eu/gpt-4o-mini", "openai-us/gpt-4o-mini", "anthropic/claude-sonnet"
DEPLOYMENT_USAGE = {
    EU: (2 * 1_000_000, 3),
    US: (1_000_000 + 4 * 2_000_000, 5),
    CLAUDE: (2 * 5_000_000, 2),
    "": (7_000_000, 2),
}


def routed(deployment: str, attempts: int = 1, *, fallback: bool = False) -> dict[str, Any]:
    """The routing the proxy records for a request `deployment` served."""
    return {"deployment": deployment, "attempts": attempts, "fallback": fallback}


def usage_of(w: World) -> list[dict[str, Any]]:
    """Member 1: K1 3 calls of gpt-4o-mini (app-x) on day 1, one failed and one blocked call;
    K1b 2 calls of claude (anthropic, no app) on day 2. Member 2: K2 4 calls of gpt-4o-mini
    (app-y), 2 each day. Owner: K0 one call of llama (no provider, no app) on day 2.
    Deployments: K1's first two calls and its failed one (after 3 attempts) EU, its third US
    after a fallback; K2's calls US; K1b's CLAUDE; the blocked call and the owner's none."""
    one = (w.org_id, w.project_a, w.key1, w.member1_id)
    one_b = (w.org_id, w.project_a, w.key1b, w.member1_id)
    two = (w.org_id, w.team_b, w.key2, w.member2_id)
    mine = (w.org_id, w.root, w.key0, w.owner_id)
    hour = timedelta(hours=1)
    return [
        *(
            event(
                *one,
                DAY_1 + i * hour,
                app="app-x",
                cost=1_000_000,
                prompt=100,
                completion=50,
                routing=routed(EU) if i < 2 else routed(US, 2, fallback=True),
            )
            for i in range(3)
        ),
        event(
            *one,
            DAY_1,
            app="app-x",
            status=502,
            error_type="upstream_error",
            routing=routed(EU, 3),
        ),
        event(*one, DAY_1, app="app-x", status=402, error_type="budget_exceeded"),
        *(
            event(
                *one_b,
                DAY_2 + i * hour,
                model="claude-sonnet",
                provider="anthropic",
                cost=5_000_000,
                prompt=1000,
                completion=200,
                routing=routed(CLAUDE),
            )
            for i in range(2)
        ),
        *(
            event(
                *two,
                day,
                app="app-y",
                cost=2_000_000,
                prompt=300,
                completion=100,
                routing=routed(US),
            )
            for day in (DAY_1, DAY_1 + hour, DAY_2, DAY_2 + hour)
        ),
        event(*mine, DAY_2, model="llama-3", provider=None, cost=7_000_000, prompt=10),
    ]


@pytest.fixture
async def world(runtime: Runtime, app_client: httpx.AsyncClient) -> World:
    built = await build_world(runtime, app_client)
    await store(runtime, usage_of(built))
    return built
