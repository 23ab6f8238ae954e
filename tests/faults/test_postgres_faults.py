"""Postgres refusing connections, then accepting them and going silent, behind a TCP proxy in
front of a running `sluicegate serve`: every call answers within the configured timeouts, with
503 `database_unavailable` in the shape of its API (never a 500, never a traceback in the log);
keys and rules checked before the outage keep working, their usage waiting in Redis; and all is
well again once the database is back, without a restart."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from sluicegate.runtime import Runtime
from tests.admin import make_person
from tests.conftest import GatewayStarter, asyncpg_url, make_settings
from tests.factories import make_tenant
from tests.faults.conftest import CHAT, COST, books_when, chat_body, serve_env, tenant_with_budget
from tests.faults.servers import TcpProxy

# The gateway's bounds: a silent database is reported within about connect + pool + statement.
CONNECT, POOL, STATEMENT = 1.0, 1.0, 2.0
# What "within the timeout" allows on a loaded machine: the bounds, and as much again.
ANSWERED_WITHIN = 2 * (CONNECT + POOL + STATEMENT) + 2
RECOVERED_WITHIN = 15.0


async def usage_rows(runtime: Runtime, org_id: str) -> list[tuple]:
    async with runtime.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT request_id, created_at, status_code, latency_ms FROM usage_events "
                "WHERE org_id = :org ORDER BY created_at"
            ),
            {"org": org_id},
        )
        return [tuple(row) for row in rows]


def through(proxy: TcpProxy, postgres_url: str) -> str:
    database = postgres_url.rsplit("/", 1)[1]
    return asyncpg_url(database).replace(":5432/", f":{proxy.port}/")


async def timed(http: httpx.AsyncClient, method: str, url: str, **kwargs: object) -> tuple:
    started = time.monotonic()
    answer = await http.request(method, url, **kwargs)  # type: ignore[arg-type]
    return answer, time.monotonic() - started


async def test_a_refused_then_silent_database_answers_503_and_recovers_without_restart(
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    fault_providers_file: Path,
    start_gateway: GatewayStarter,
) -> None:
    proxy = TcpProxy("127.0.0.1", 5432).start()
    prefix = f"{redis_prefix}:pg{secrets.token_hex(4)}"
    direct = make_settings(database_url=postgres_url, redis_url=redis_url, redis_prefix=prefix)
    runtime = Runtime.build(direct)
    await runtime.start()
    try:
        known = (await tenant_with_budget(runtime, 100 * COST)).tenant
        unknown = await make_tenant(runtime)
        admin = await make_person(runtime)
        behind_proxy = make_settings(
            database_url=through(proxy, postgres_url), redis_url=redis_url, redis_prefix=prefix
        )
        env = serve_env(
            behind_proxy,
            fault_providers_file,
            migrate_on_start="false",
            database_connect_timeout=str(CONNECT),
            database_pool_timeout=str(POOL),
            database_statement_timeout=str(STATEMENT),
        )
        gateway = start_gateway(env=env)
        chat = gateway.base_url + CHAT
        me = gateway.base_url + "/api/v1/auth/me"

        def key(tenant: object) -> dict[str, str]:
            return {"authorization": f"Bearer {tenant.key}"}  # type: ignore[attr-defined]

        async with httpx.AsyncClient(timeout=60) as http:
            assert (await http.post(chat, json=chat_body(), headers=key(known))).status_code == 200
            assert (await http.get(me, headers=admin.headers)).status_code == 200

            for fault in (proxy.refuse, proxy.hang):
                fault()
                answer, took = await timed(
                    http, "POST", chat, json=chat_body(), headers=key(unknown)
                )
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "database_unavailable"
                assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
                assert took < ANSWERED_WITHIN, f"{fault.__name__}: answered after {took:.1f} s"

                answer, took = await timed(http, "GET", me, headers=admin.headers)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "database_unavailable"
                assert set(answer.json()["error"]) == {"code", "message", "details"}
                assert took < ANSWERED_WITHIN, f"{fault.__name__}: answered after {took:.1f} s"

                # A key and rules checked before the outage keep working; usage waits in Redis.
                answer = await http.post(chat, json=chat_body(), headers=key(known))
                assert answer.status_code == 200, answer.text

            proxy.heal()
            deadline = time.monotonic() + RECOVERED_WITHIN
            while (
                status := (
                    await http.post(chat, json=chat_body(), headers=key(unknown))
                ).status_code
            ) != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert status == 200, "the gateway did not recover by itself"
            assert (await http.get(me, headers=admin.headers)).status_code == 200

        books = await books_when(runtime, known.org_id, lambda b: b.rows == 3, timeout=20)
        assert books.rows == 3, "usage of the outage was lost"
        assert len(books.request_ids) == 3, await usage_rows(runtime, known.org_id)
        books.assert_consistent()
        log = gateway.log()
        assert "Traceback" not in log, log[-3000:]
        assert '"status": 500' not in log
    finally:
        await runtime.close()
        proxy.close()
