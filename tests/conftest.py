"""Real-service fixtures every test module reuses.

- `postgres_url`: a fresh Postgres database for the test session (created, migrated, dropped).
- `redis_url` / `redis_prefix`: the Redis server and a key prefix of this session, cleaned after.
- `backend`: parametrizes a test over both storage backends: "postgres" (Postgres + Redis, as in
  production) and "embedded" (SQLite + in-process counters). `settings` and `runtime` follow it.
- `mock_upstream`: the project's mock upstream server on a loopback port.
- `start_gateway`: `sluicegate serve` in its own process (real uvicorn) on a loopback port.
- `app_client`: the app in-process over ASGI, for unit-level HTTP tests.
- `own_redis`: a Redis server of the test's own, to break (tests/faults/servers.py).

A test that needs Postgres or Redis fails, naming the service, when it is down; never skips.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio

from sluicegate.app import create_app
from sluicegate.core.db import make_engine
from sluicegate.migrate import upgrade
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.faults.servers import RedisServer
from tests.support import ServerProcess, free_port, start_process

POSTGRES_ADMIN_DSN = os.environ.get(
    "SLUICEGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SLUICEGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
TEST_SECRET_KEY = "test-secret-key-" + "x" * 32
BACKENDS = ("postgres", "embedded")


# --- Postgres -----------------------------------------------------------------------------


async def _admin_execute(sql: str) -> None:
    try:
        connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"Postgres is not reachable at {POSTGRES_ADMIN_DSN} ({exc}); start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`",
            pytrace=False,
        )
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def asyncpg_url(database: str) -> str:
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{database}"


async def _migrate(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Callable[[], str]]:
    """Makes fresh, empty Postgres databases; all of them are dropped at the end of the session."""
    created: list[str] = []

    def make() -> str:
        name = f"sluicegate_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return asyncpg_url(name)

    yield make
    for name in created:
        asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url(postgres_database: Callable[[], str]) -> str:
    """The session's migrated Postgres database."""
    url = postgres_database()
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_database: Callable[[], str]) -> str:
    """A migrated database nothing stays connected to, so it can be copied (its name)."""
    url = postgres_database()
    asyncio.run(_migrate(url))
    return url.rsplit("/", 1)[1]


@pytest.fixture
def fresh_postgres_url(postgres_template: str) -> Iterator[str]:
    """A migrated Postgres database of this test alone, copied from the template (a copy takes a
    fraction of what migrating does): for tests whose workers take whatever is due in their
    database, which other tests' leftovers must not be."""
    name = f"sluicegate_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    yield asyncpg_url(name)
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's migrated SQLite database file."""
    path = tmp_path_factory.mktemp("sqlite") / "sluicegate.db"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(_migrate(url))
    return url


# --- Redis --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}); start it with "
            '`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`',
            pytrace=False,
        )
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_prefix(redis_url: str) -> Iterator[str]:
    """This session's key prefix; every key under it is deleted at the end."""
    prefix = f"sgtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


# --- Passwords ------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing() -> Iterator[None]:
    """Argon2id as in production, at the smallest cost the library allows: at its recommended
    cost each hash or check takes a quarter of a second here, and the suite makes hundreds of
    people. Gateways in their own processes keep the full cost."""
    from argon2 import PasswordHasher

    from sluicegate.identity import passwords

    production = passwords._hasher
    passwords._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    passwords._dummy_hash.cache_clear()
    yield
    passwords._hasher = production
    passwords._dummy_hash.cache_clear()


# --- Backends, settings, runtime ------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_settings(**values: object) -> Settings:
    """Settings for tests: explicit values only, never the developer's environment or .env."""
    values.setdefault("secret_key", TEST_SECRET_KEY)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(backend: str, request: pytest.FixtureRequest) -> Settings:
    if backend == "postgres":
        return make_settings(
            database_url=request.getfixturevalue("postgres_url"),
            redis_url=request.getfixturevalue("redis_url"),
            redis_prefix=request.getfixturevalue("redis_prefix"),
        )
    return make_settings(database_url=request.getfixturevalue("sqlite_url"))


def settings_env(settings: Settings) -> dict[str, str]:
    """The same settings as SLUICEGATE_* variables, for a server in its own process."""
    env = {"SLUICEGATE_SECRET_KEY": settings.secret.decode()}
    if settings.database_url:
        env["SLUICEGATE_DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["SLUICEGATE_REDIS_URL"] = settings.redis_url
        env["SLUICEGATE_REDIS_PREFIX"] = settings.redis_prefix
    return env


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    active = Runtime.build(settings)
    await active.start()
    try:
        yield active
    finally:
        await active.close()


@pytest.fixture
async def app_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process (ASGI, lifespan run), sharing the test's runtime."""
    app = create_app(settings, runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


# --- Servers over loopback --------------------------------------------------------------------


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("mock-upstream") / "mock.log"
    server = start_process(
        ["sluicegate.mockupstream", "--port", str(port)],
        port=port,
        log_path=log,
        ready_path="/health",
    )
    yield server
    server.stop()


@dataclass
class GatewayStarter:
    tmp_path: Path
    started: list[ServerProcess]

    def __call__(
        self,
        settings: Settings | None = None,
        *,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
    ) -> ServerProcess:
        port = free_port()
        variables = settings_env(settings) if settings is not None else {}
        variables.update(env or {})
        server = start_process(
            ["sluicegate", "serve", "--port", str(port), *args],
            port=port,
            log_path=self.tmp_path / f"gateway-{port}.log",
            ready_path="/healthz",
            env=variables,
            cwd=cwd or self.tmp_path,
        )
        self.started.append(server)
        return server


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[GatewayStarter]:
    """Start `sluicegate serve` (real uvicorn) on a loopback port; stopped after the test."""
    starter = GatewayStarter(tmp_path, [])
    yield starter
    for server in starter.started:
        server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, to flush, stop and start again (empty: no persistence)."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def unique_email() -> Callable[[], str]:
    return lambda: f"user-{secrets.token_hex(6)}@example.com"
