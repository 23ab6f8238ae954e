"""Helpers of the admin API tests: people with admin tokens, and a client acting as one of them.

People are made through the identity service (the same one `sluicegate bootstrap` uses), so a
test starts from a real user row and a real token digest, then speaks HTTP like any client.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from sluicegate.identity.passwords import hash_password
from sluicegate.identity.service import ensure_user, issue_admin_token
from sluicegate.runtime import Runtime


@dataclass(frozen=True)
class Person:
    user_id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def unique_address(label: str = "user") -> str:
    return f"{label}-{secrets.token_hex(6)}@example.com"


async def make_person(
    runtime: Runtime,
    *,
    email: str | None = None,
    password: str | None = None,
    platform_admin: bool = False,
) -> Person:
    async with runtime.unit_of_work() as session:
        user, _ = await ensure_user(
            session, email or unique_address(), platform_admin=platform_admin
        )
        if password is not None:
            user.password_hash = await hash_password(password)
        _token, secret = await issue_admin_token(session, user, pepper=runtime.settings.secret)
        return Person(user.id, user.email, secret)


class Api:
    """An HTTP client that sends one person's admin token with every call."""

    def __init__(self, client: httpx.AsyncClient, person: Person | None) -> None:
        self.client = client
        self.person = person

    @property
    def user_id(self) -> str:
        """The id of the person this client acts as."""
        assert self.person is not None, "this client acts as nobody"
        return self.person.user_id

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(self.person.headers) if self.person else {}
        headers.update(extra or {})
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return await self.client.request(
            method, path, json=json, params=params, headers=self._headers(headers)
        )

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("PATCH", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.call("DELETE", path, **kwargs)


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body, after checking the status (the body is shown when it differs)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The admin error body `{"error": {"code", "message", "details"}}`, after the status."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])
    return dict(body["error"])


async def all_pages(api: Api, path: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of a paginated list, following next_cursor."""
    items: list[Any] = []
    cursor = None
    while True:
        query = dict(params or {})
        if cursor:
            query["cursor"] = cursor
        page = ok(await api.get(path, params=query))
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items


def org_scoped_routes() -> list[tuple[str, str]]:
    """(method, path template) of every route under /api/v1/orgs/{org_id}, read from the app's
    OpenAPI document, so a route added later is covered by the tests that walk this list."""
    from sluicegate.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url="sqlite+aiosqlite:///unused.db"))
    routes = sorted(
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/api/v1/orgs/{org_id}")
        for method in operations
    )
    assert len(routes) >= 25, f"expected the whole admin API, found {routes}"
    return routes
