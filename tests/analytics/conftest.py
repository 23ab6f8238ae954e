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
from tests.admin import Api, Person, make_person, ok

ZONE = "Europe/Berlin"
DAY_1 = datetime(2026, 2, 10, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
DAY_2 = DAY_1 + timedelta(days=1)
WINDOW = {"from": "2026-02-10", "to": "2026-02-11"}
_request_ids = itertools.count()


@dataclass
class World:
    runtime: Runtime
    client: httpx.AsyncClient
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


async def join(
    owner: Api, client: httpx.AsyncClient, base: str, role: str, group: str, name: str
) -> tuple[Api, str]:
    email = f"{name.lower().replace(' ', '-')}-{secrets.token_hex(4)}@example.com"
    invited = ok(
        await owner.post(
            f"{base}/invitations", json={"email": email, "role": role, "group_id": group}
        ),
        201,
    )
    joined = ok(
        await client.post(
            f"/api/v1/invitations/{invited['token']}/accept",
            json={"name": name, "password": "a long enough password"},
        )
    )
    return Api(client, Person(joined["user_id"], email, joined["token"])), joined["user_id"]


async def make_key(api: Api, base: str, name: str, group: str, owner: str | None = None) -> str:
    body = {"name": name, "group_id": group, "owner_user_id": owner}
    return str(ok(await api.post(f"{base}/keys", json=body), 201)["id"])


async def build_world(
    runtime: Runtime, client: httpx.AsyncClient, name: str = "Acme", zone: str = ZONE
) -> World:
    person = await make_person(runtime)
    owner = Api(client, person)
    org = ok(await owner.post("/api/v1/orgs", json={"name": name, "timezone": zone}), 201)
    base = f"/api/v1/orgs/{org['id']}"
    team_a = ok(await owner.post(f"{base}/groups", json={"name": "Team A"}), 201)["id"]
    project_a = ok(
        await owner.post(f"{base}/groups", json={"name": "Project A1", "parent_id": team_a}), 201
    )["id"]
    team_b = ok(await owner.post(f"{base}/groups", json={"name": "Team B"}), 201)["id"]
    admin_a, admin_a_id = await join(owner, client, base, "admin", team_a, "Admin A")
    viewer_b, _ = await join(owner, client, base, "viewer", team_b, "Viewer B")
    member1, member1_id = await join(owner, client, base, "member", project_a, "Member One")
    member2, member2_id = await join(owner, client, base, "member", team_b, "Member Two")
    return World(
        runtime=runtime,
        client=client,
        base=base,
        org_id=org["id"],
        root=org["root_group_id"],
        team_a=team_a,
        project_a=project_a,
        team_b=team_b,
        owner=owner,
        owner_id=person.user_id,
        admin_a=admin_a,
        admin_a_id=admin_a_id,
        viewer_b=viewer_b,
        member1=member1,
        member1_id=member1_id,
        member2=member2,
        member2_id=member2_id,
        key0=await make_key(owner, base, "root key", org["root_group_id"]),
        key1=await make_key(member1, base, "one", project_a),
        key1b=await make_key(member1, base, "one-b", project_a),
        key2=await make_key(member2, base, "two", team_b),
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
        "routing": None,
    }


async def store(runtime: Runtime, events: list[dict[str, Any]]) -> None:
    async with runtime.unit_of_work() as session:
        await store_usage(session, events)


# The usage every world gets (see usage_of). Costs in nano-USD.
TOTAL_COST = 3 * 1_000_000 + 2 * 5_000_000 + 4 * 2_000_000 + 7_000_000
TOTAL_REQUESTS = 12
MEMBER1_COST = 3 * 1_000_000 + 2 * 5_000_000
MEMBER2_COST = 4 * 2_000_000


def usage_of(w: World) -> list[dict[str, Any]]:
    """Member 1: K1 3 calls of gpt-4o-mini (app-x) on day 1, one failed and one blocked call;
    K1b 2 calls of claude (anthropic, no app) on day 2. Member 2: K2 4 calls of gpt-4o-mini
    (app-y), 2 each day. Owner: K0 one call of llama (no provider, no app) on day 2."""
    one = (w.org_id, w.project_a, w.key1, w.member1_id)
    one_b = (w.org_id, w.project_a, w.key1b, w.member1_id)
    two = (w.org_id, w.team_b, w.key2, w.member2_id)
    mine = (w.org_id, w.root, w.key0, w.owner_id)
    hour = timedelta(hours=1)
    return [
        *(
            event(*one, DAY_1 + i * hour, app="app-x", cost=1_000_000, prompt=100, completion=50)
            for i in range(3)
        ),
        event(*one, DAY_1, app="app-x", status=502, error_type="upstream_error"),
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
            )
            for i in range(2)
        ),
        *(
            event(*two, day, app="app-y", cost=2_000_000, prompt=300, completion=100)
            for day in (DAY_1, DAY_1 + hour, DAY_2, DAY_2 + hour)
        ),
        event(*mine, DAY_2, model="llama-3", provider=None, cost=7_000_000, prompt=10),
    ]


@pytest.fixture
async def world(runtime: Runtime, app_client: httpx.AsyncClient) -> World:
    built = await build_world(runtime, app_client)
    await store(runtime, usage_of(built))
    return built
