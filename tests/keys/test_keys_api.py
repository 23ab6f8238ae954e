"""API keys over the admin API, seen from both sides: what the admin API shows (never a secret
after creation or rotation, digests only in the table) and what the proxy does with each change
(disable, expiry, allowed models, rotation with and without grace, deletion, a frozen or removed
owner, a deleted org)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from sluicegate.runtime import Runtime
from tests.admin import Api, error, make_person, ok
from tests.factories import Org, add_group, join, make_key, make_org
from tests.proxy.conftest import usage_events

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Setup:
    """An org with one group under the root, "project", where the keys are made."""

    org: Org
    group: str

    @property
    def owner(self) -> Api:
        return self.org.owner

    @property
    def base(self) -> str:
        return self.org.base


@pytest.fixture
async def setup(runtime: Runtime, proxy_client: httpx.AsyncClient) -> Setup:
    org = await make_org(runtime, proxy_client)
    return Setup(org, (await add_group(org, "project")).id)


async def new_key(setup: Setup, **fields: object) -> dict:
    """The creation answer of a key in the setup's group."""
    return (await make_key(setup.org, setup.group, **fields)).body


async def chat(client: httpx.AsyncClient, secret: str, model: str = "gpt-4o-mini") -> int:
    response = await client.post(
        CHAT, json={**BODY, "model": model}, headers={"authorization": f"Bearer {secret}"}
    )
    return response.status_code


async def test_the_secret_is_shown_on_create_and_rotate_only_and_stored_as_a_digest(
    setup: Setup, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    created = await new_key(setup)
    first = created["key"]
    assert first.startswith("sk-sg-") and created["prefix"] == first[:12]
    rotated = ok(await setup.owner.post(f"{setup.base}/keys/{created['id']}/rotate"))
    second = rotated["key"]
    assert second != first and rotated["prefix"] == second[:12]
    seen = [
        await setup.owner.get(f"{setup.base}/keys"),
        await setup.owner.get(f"{setup.base}/keys/{created['id']}"),
        await setup.owner.patch(f"{setup.base}/keys/{created['id']}", json={"name": "renamed"}),
        await setup.owner.get(f"{setup.base}/audit", params={"limit": 200}),
        await setup.owner.get(f"{setup.base}/members"),
    ]
    for response in seen:
        assert response.status_code == 200
        for secret in (first, second):
            assert secret not in response.text
            assert secret[12:] not in response.text
    async with runtime.sessions() as session:
        for table in ("api_keys", "audit_events"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()
            dump = repr(rows)
            assert first not in dump and second not in dump and second[12:] not in dump


async def test_disabling_and_enabling_acts_on_the_proxy_at_once(
    setup: Setup, proxy_client: httpx.AsyncClient
) -> None:
    key = await new_key(setup)
    assert await chat(proxy_client, key["key"]) == 200
    path = f"{setup.base}/keys/{key['id']}"
    ok(await setup.owner.patch(path, json={"status": "disabled"}))
    assert await chat(proxy_client, key["key"]) == 401
    ok(await setup.owner.patch(path, json={"status": "active"}))
    assert await chat(proxy_client, key["key"]) == 200


async def test_allowed_models_and_expiry_change_what_the_key_may_do(
    setup: Setup, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    key = await new_key(setup, allowed_models=["claude-*"])
    assert await chat(proxy_client, key["key"]) == 403
    path = f"{setup.base}/keys/{key['id']}"
    updated = ok(await setup.owner.patch(path, json={"allowed_models": None}))
    assert updated["allowed_models"] is None
    assert await chat(proxy_client, key["key"]) == 200
    soon = runtime.clock.now() + timedelta(seconds=1)
    ok(await setup.owner.patch(path, json={"expires_at": soon.isoformat()}))
    await asyncio.sleep(1.1)
    assert await chat(proxy_client, key["key"]) == 401
    past = (runtime.clock.now() - timedelta(days=1)).isoformat()
    assert error(await setup.owner.patch(path, json={"expires_at": past}), 422)["details"] == {
        "field": "expires_at"
    }
    ok(await setup.owner.patch(path, json={"expires_at": None}))
    assert await chat(proxy_client, key["key"]) == 200


async def test_rotation_ends_the_old_secret_at_once_or_after_the_grace_period(
    setup: Setup, proxy_client: httpx.AsyncClient
) -> None:
    key = await new_key(setup)
    rotate = f"{setup.base}/keys/{key['id']}/rotate"
    now = ok(await setup.owner.post(rotate))
    assert now["previous_key_expires_at"] is None
    assert await chat(proxy_client, key["key"]) == 401
    assert await chat(proxy_client, now["key"]) == 200
    graced = ok(await setup.owner.post(rotate, json={"grace_period_seconds": 2}))
    assert graced["previous_key_expires_at"] is not None
    assert await chat(proxy_client, now["key"]) == 200  # the old one, during its grace
    assert await chat(proxy_client, graced["key"]) == 200
    await asyncio.sleep(2.1)
    assert await chat(proxy_client, now["key"]) == 401
    assert await chat(proxy_client, graced["key"]) == 200
    body = error(await setup.owner.post(rotate, json={"grace_period_seconds": 10**9}), 422)
    assert body["details"]["errors"][0]["field"] == "grace_period_seconds"


async def test_a_deleted_key_is_refused_and_listed_as_revoked(
    setup: Setup, proxy_client: httpx.AsyncClient
) -> None:
    key = await new_key(setup)
    path = f"{setup.base}/keys/{key['id']}"
    assert (await setup.owner.delete(path)).status_code == 204
    assert await chat(proxy_client, key["key"]) == 401
    assert ok(await setup.owner.get(path))["status"] == "revoked"
    listed = ok(await setup.owner.get(f"{setup.base}/keys"))
    assert key["id"] not in {k["id"] for k in listed["items"]}
    revoked = ok(await setup.owner.get(f"{setup.base}/keys", params={"status": "revoked"}))
    assert [k["id"] for k in revoked["items"]] == [key["id"]]
    error(await setup.owner.patch(path, json={"status": "active"}), 409)
    error(await setup.owner.post(f"{path}/rotate"), 409)
    assert (await setup.owner.delete(path)).status_code == 204


async def test_last_used_is_stamped_after_a_call(
    setup: Setup, proxy_client: httpx.AsyncClient
) -> None:
    key = await new_key(setup)
    assert key["last_used_at"] is None
    assert await chat(proxy_client, key["key"]) == 200
    for _ in range(100):
        shown = ok(await setup.owner.get(f"{setup.base}/keys/{key['id']}"))
        if shown["last_used_at"] is not None:
            break
        await asyncio.sleep(0.05)
    assert shown["last_used_at"] is not None


async def test_a_frozen_owner_and_a_removed_member_stop_their_keys_at_once(
    setup: Setup, runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    platform = Api(proxy_client, await make_person(runtime, platform_admin=True))
    people = []
    for _ in range(2):
        member = await join(setup.org, "member", setup.group)
        key = await make_key(setup.org, setup.group, by=member, name="mine")
        assert await chat(proxy_client, key.secret) == 200
        people.append((member.user_id, key.secret))
    (frozen_id, frozen_key), (removed_id, removed_key) = people
    ok(await platform.post(f"/api/v1/users/{frozen_id}/freeze"))
    assert await chat(proxy_client, frozen_key) == 403
    ok(await platform.post(f"/api/v1/users/{frozen_id}/unfreeze"))
    assert await chat(proxy_client, frozen_key) == 200
    org_id = setup.org.id
    before = [e for e in await usage_events(runtime, org_id, expect=2) if e.user_id == removed_id]
    assert len(before) == 1
    assert (await setup.owner.delete(f"{setup.base}/members/{removed_id}")).status_code == 204
    # Its keys are disabled too, but the answer says why: the owner was removed (DESIGN §9).
    assert await chat(proxy_client, removed_key) == 403
    # Their usage history stays (the refused call is not theirs to bill: the key is disabled).
    after = [e for e in await usage_events(runtime, org_id, expect=2) if e.user_id == removed_id]
    assert [e.request_id for e in after] == [e.request_id for e in before]


async def test_deleting_the_org_stops_every_key(
    setup: Setup, proxy_client: httpx.AsyncClient
) -> None:
    keys = [await new_key(setup) for _ in range(3)]
    assert [await chat(proxy_client, k["key"]) for k in keys] == [200, 200, 200]
    assert (await setup.owner.delete(setup.base)).status_code == 204
    assert [await chat(proxy_client, k["key"]) for k in keys] == [401, 401, 401]


async def test_keys_are_made_only_for_members_and_in_the_orgs_groups(setup: Setup) -> None:
    outsider = "usr_01jdzzzzzzzzzzzzzzzzzzzzzz"
    body = error(
        await setup.owner.post(
            f"{setup.base}/keys",
            json={"name": "k", "group_id": setup.group, "owner_user_id": outsider},
        ),
        404,
    )
    assert body["details"] == {"field": "owner_user_id"}
    body = error(
        await setup.owner.post(f"{setup.base}/keys", json={"name": "k", "group_id": "grp_nope"}),
        404,
    )
    assert body["details"] == {"field": "group_id"}
    error(
        await setup.owner.post(
            f"{setup.base}/keys",
            json={"name": "k", "group_id": setup.group, "allowed_models": ["bad\u0000model"]},
        ),
        422,
    )
