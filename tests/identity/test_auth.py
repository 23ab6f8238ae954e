"""Identity over the admin API: password login with expiring sessions, log out, revoke all my
sessions, personal tokens (shown once, stored as digests), changing one's password, and a
platform admin freezing a user (their sessions, tokens and API keys stop at once)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, text, update

from sluicegate.audit.models import PLATFORM_CHAIN, AuditEvent
from sluicegate.identity.models import AdminToken, User
from sluicegate.runtime import Runtime
from tests.admin import Api, error, make_person, ok, unique_address

PASSWORD = "correct horse battery"


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_login_starts_an_expiring_session_and_me_answers(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)
    body = ok(await login(app_client, person.email.upper(), PASSWORD))
    assert body["user_id"] == person.user_id and body["token"].startswith("sg-adm-")
    lifetime = timedelta(hours=runtime.settings.session_ttl_hours)
    async with runtime.sessions() as session:
        token = await session.scalar(
            select(AdminToken).where(
                AdminToken.user_id == person.user_id, AdminToken.kind == "session"
            )
        )
    assert token is not None and token.expires_at is not None
    assert abs((token.expires_at - token.created_at) - lifetime) < timedelta(seconds=5)
    me = ok(
        await app_client.get(
            "/api/v1/auth/me", headers={"authorization": f"Bearer {body['token']}"}
        )
    )
    assert (me["id"], me["email"], me["memberships"]) == (person.user_id, person.email, [])


async def test_wrong_password_and_unknown_email_answer_alike(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)
    wrong = error(await login(app_client, person.email, "not the password"), 401)
    unknown = error(await login(app_client, unique_address(), PASSWORD), 401)
    assert wrong == unknown
    assert wrong["message"] == "email or password is wrong"


async def test_an_expired_session_is_refused(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)
    token = ok(await login(app_client, person.email, PASSWORD))["token"]
    async with runtime.unit_of_work() as session:
        await session.execute(
            update(AdminToken)
            .where(AdminToken.user_id == person.user_id, AdminToken.kind == "session")
            .values(expires_at=runtime.clock.now() - timedelta(seconds=1))
        )
    headers = {"authorization": f"Bearer {token}"}
    assert (
        "expired" in error(await app_client.get("/api/v1/auth/me", headers=headers), 401)["message"]
    )


async def test_no_token_or_a_bad_one_is_401(app_client: httpx.AsyncClient) -> None:
    assert error(await app_client.get("/api/v1/auth/me"), 401)["code"] == "unauthenticated"
    bad = {"authorization": "Bearer sg-adm-not-a-real-token"}
    assert (
        error(await app_client.get("/api/v1/orgs", headers=bad), 401)["code"] == "unauthenticated"
    )
    basic = {"authorization": "Basic dXNlcjpwYXNz"}
    error(await app_client.get("/api/v1/orgs", headers=basic), 401)


async def test_logout_ends_only_the_session_it_was_called_with(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)
    first = Api(app_client, None)
    one = ok(await login(app_client, person.email, PASSWORD))["token"]
    two = ok(await login(app_client, person.email, PASSWORD))["token"]
    assert (
        await first.post("/api/v1/auth/logout", headers={"authorization": f"Bearer {one}"})
    ).status_code == 204
    error(await app_client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {one}"}), 401)
    ok(await app_client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {two}"}))


async def test_revoke_all_sessions_keeps_personal_tokens(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)  # person.token is a personal token
    sessions = [ok(await login(app_client, person.email, PASSWORD))["token"] for _ in range(3)]
    api = Api(app_client, person)
    listed = ok(await api.get("/api/v1/auth/tokens", params={"kind": "session"}))["items"]
    assert len(listed) == 3 and all(item["kind"] == "session" for item in listed)
    assert ok(await api.post("/api/v1/auth/sessions/revoke-all")) == {"revoked": 3}
    for token in sessions:
        error(
            await app_client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {token}"}),
            401,
        )
    ok(await api.get("/api/v1/auth/me"))
    assert ok(await api.get("/api/v1/auth/tokens", params={"kind": "session"}))["items"] == []


async def test_personal_tokens_are_shown_once_and_stored_as_digests(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    api = Api(app_client, await make_person(runtime))
    created = ok(await api.post("/api/v1/auth/tokens", json={"name": "ci"}), 201)
    secret = created["token"]
    assert secret.startswith("sg-adm-") and created["prefix"] == secret[:12]
    listed = ok(await api.get("/api/v1/auth/tokens"))
    assert created["id"] in {t["id"] for t in listed["items"]}
    assert secret not in str(listed)
    async with runtime.sessions() as session:
        row = (
            await session.execute(
                text("SELECT * FROM admin_tokens WHERE id = :id"), {"id": created["id"]}
            )
        ).one()
    assert secret not in str(tuple(row))
    scripted = Api(app_client, None)
    ok(await scripted.get("/api/v1/auth/me", headers={"authorization": f"Bearer {secret}"}))
    assert (await api.delete(f"/api/v1/auth/tokens/{created['id']}")).status_code == 204
    error(await scripted.get("/api/v1/auth/me", headers={"authorization": f"Bearer {secret}"}), 401)
    error(await api.delete(f"/api/v1/auth/tokens/{created['id']}"), 404)


async def test_a_token_expiry_must_be_in_the_future(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    api = Api(app_client, await make_person(runtime))
    past = (runtime.clock.now() - timedelta(minutes=1)).isoformat()
    assert (
        error(await api.post("/api/v1/auth/tokens", json={"name": "x", "expires_at": past}), 422)[
            "details"
        ]["field"]
        == "expires_at"
    )


async def test_nobody_revokes_another_persons_token(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    owner = Api(app_client, await make_person(runtime))
    other = Api(app_client, await make_person(runtime))
    created = ok(await owner.post("/api/v1/auth/tokens", json={"name": "mine"}), 201)
    error(await other.delete(f"/api/v1/auth/tokens/{created['id']}"), 404)


async def test_changing_the_password_needs_the_old_one_and_ends_other_sessions(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    person = await make_person(runtime, password=PASSWORD)
    current = ok(await login(app_client, person.email, PASSWORD))["token"]
    other = ok(await login(app_client, person.email, PASSWORD))["token"]
    me = Api(app_client, None)
    headers = {"authorization": f"Bearer {current}"}
    refused = await me.patch(
        "/api/v1/auth/me", json={"password": "a new password!"}, headers=headers
    )
    assert error(refused, 403)["details"]["field"] == "current_password"
    changed = await me.patch(
        "/api/v1/auth/me",
        json={"password": "a new password!", "current_password": PASSWORD, "name": "Renamed"},
        headers=headers,
    )
    assert ok(changed)["name"] == "Renamed"
    ok(await app_client.get("/api/v1/auth/me", headers=headers))
    error(
        await app_client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {other}"}), 401
    )
    error(await login(app_client, person.email, PASSWORD), 401)
    ok(await login(app_client, person.email, "a new password!"))
    short = await me.patch(
        "/api/v1/auth/me",
        json={"password": "short", "current_password": "a new password!"},
        headers=headers,
    )
    assert error(short, 422)["details"]["field"] == "password"


async def test_freezing_stops_sessions_tokens_and_keys_at_once_and_unfreezing_restores(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    platform = Api(app_client, await make_person(runtime, platform_admin=True))
    person = await make_person(runtime, password=PASSWORD)
    session_token = ok(await login(app_client, person.email, PASSWORD))["token"]
    frozen = ok(await platform.post(f"/api/v1/users/{person.user_id}/freeze"))
    assert frozen["status"] == "frozen"
    for token in (person.token, session_token):
        body = error(
            await app_client.get("/api/v1/auth/me", headers={"authorization": f"Bearer {token}"}),
            401,
        )
        assert body["code"] == "account_frozen"
    assert error(await login(app_client, person.email, PASSWORD), 401)["code"] == "account_frozen"
    ok(await platform.post(f"/api/v1/users/{person.user_id}/unfreeze"))
    ok(await app_client.get("/api/v1/auth/me", headers=person_headers(person.token)))
    async with runtime.sessions() as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.org_id == PLATFORM_CHAIN, AuditEvent.target_id == person.user_id)
                # The chain's order: without it Postgres may return the rows in any order.
                .order_by(AuditEvent.seq)
            )
        )
    assert actions[-2:] == ["user.freeze", "user.unfreeze"]


def person_headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_only_platform_admins_freeze_and_nobody_freezes_themselves(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    someone = Api(app_client, await make_person(runtime))
    victim = await make_person(runtime)
    error(await someone.post(f"/api/v1/users/{victim.user_id}/freeze"), 403)
    error(await someone.get("/api/v1/users"), 403)
    platform_person = await make_person(runtime, platform_admin=True)
    platform = Api(app_client, platform_person)
    error(await platform.post(f"/api/v1/users/{platform_person.user_id}/freeze"), 409)
    error(await platform.post("/api/v1/users/usr_unknown/freeze"), 404)
    found = ok(await platform.get("/api/v1/users", params={"email": victim.email}))
    assert [u["id"] for u in found["items"]] == [victim.user_id]
    async with runtime.sessions() as session:
        user = await session.get(User, victim.user_id)
    assert user is not None and user.status == "active"
