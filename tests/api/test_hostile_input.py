"""Inputs a fuzzer rarely builds on its own, on both backends: instants that overflow once in
UTC, NUL and control characters, cursors of the wrong shape or size, bodies that are not JSON or
not UTF-8. Each is a 4xx in the one error shape, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sluicegate.runtime import Runtime
from tests.admin import Api, make_person
from tests.factories import add_group, make_org_as

OVERFLOWING = ("9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00")


@pytest.fixture
async def caller(runtime: Runtime, app_client: httpx.AsyncClient) -> tuple[Api, str, str]:
    api = Api(app_client, await make_person(runtime, platform_admin=True))
    org = await make_org_as(api)
    return api, org.base, (await add_group(org, "g")).id


def refused(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body["error"]) == {"code", "message", "details"}
    return dict(body["error"])


@pytest.mark.parametrize("moment", OVERFLOWING)
async def test_instants_that_overflow_in_utc_are_422(
    caller: tuple[Api, str, str], moment: str
) -> None:
    api, base, group = caller
    key = await api.post(
        f"{base}/keys", json={"name": "k", "group_id": group, "expires_at": moment}
    )
    assert refused(key, 422)["details"]["field"] == "expires_at"
    token = await api.post("/api/v1/auth/tokens", json={"name": "t", "expires_at": moment})
    assert refused(token, 422)["details"]["field"] == "expires_at"
    for name in ("since", "until"):
        audit = await api.get(f"{base}/audit", params={name: moment})
        assert refused(audit, 422)["details"]["field"] == name


async def test_control_characters_never_reach_the_database(caller: tuple[Api, str, str]) -> None:
    api, base, group = caller
    refused(await api.post(f"{base}/groups", json={"name": "bad\x00name"}), 422)
    refused(await api.post(f"{base}/keys", json={"name": "k\x07", "group_id": group}), 422)
    refused(await api.post("/api/v1/orgs", json={"name": "a\x1bb"}), 422)
    refused(await api.get(f"{base}/keys", params={"owner_user_id": "usr_\x00"}), 404, 422)
    refused(await api.get(f"{base}/keys/key_%00"), 404)
    refused(await api.get("/api/v1/users", params={"email": "a\x00b"}), 422)
    invite = {"email": "a\x00@example.com", "role": "member", "group_id": group}
    refused(await api.post(f"{base}/invitations", json=invite), 422)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 at all!",
        "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMF0",  # [100000000000000000000]
        "WzE4NDQ2NzQ0MDczNzA5NTUxNjE1XQ",  # [18446744073709551615], beyond BIGINT
        "eyJhIjoxfQ",  # {"a":1}
        "x" * 201,
    ],
)
async def test_cursors_of_the_wrong_shape_are_422(
    caller: tuple[Api, str, str], cursor: str
) -> None:
    api, base, _ = caller
    for path in (f"{base}/audit", f"{base}/keys", "/api/v1/orgs"):
        assert (
            refused(await api.get(path, params={"cursor": cursor}), 422)["details"]["field"]
            == "cursor"
        )


@pytest.mark.parametrize(
    "content",
    [b"\xd7\xbe%\xff", b"{not json", b"[1, 2]", b'"a string"', b"[" * 2000 + b"]" * 2000],
)
async def test_bodies_that_are_not_a_json_object_are_422(
    caller: tuple[Api, str, str], content: bytes
) -> None:
    api, base, _ = caller
    response = await api.client.post(
        f"{base}/groups",
        content=content,
        headers={**api._headers(None), "content-type": "application/json"},
    )
    refused(response, 422)
