"""The `sluicegate` command as an operator uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from sluicegate.cli import main
from sluicegate.core.digests import secret_digest
from sluicegate.identity.models import AdminToken, User
from sluicegate.migrate import alembic_config
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.conftest import GatewayStarter, settings_env
from tests.support import run_cli

COMMANDS = ["serve", "worker", "migrate", "bootstrap", "mock-upstream", "version"]


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]])
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert "usage: sluicegate" in capsys.readouterr().out


def test_serve_help_lists_its_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--host", "--port", "--workers"))


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("sluicegate 0.")


async def _bootstrap_rows(settings: Settings, email: str) -> tuple[int, set[str]]:
    runtime = Runtime.build(settings)
    try:
        async with runtime.sessions() as session:
            users = await session.scalar(select(func.count()).where(User.email == email))
            digests = set(
                await session.scalars(
                    select(AdminToken.digest)
                    .join(User, User.id == AdminToken.user_id)
                    .where(User.email == email)
                )
            )
        return int(users or 0), digests
    finally:
        await runtime.close()


def test_bootstrap_twice_gives_two_tokens_for_one_user(
    settings: Settings, unique_email: object, tmp_path: Path
) -> None:
    email = unique_email()  # type: ignore[operator]
    env = settings_env(settings)
    first = run_cli("bootstrap", "--email", email, env=env, cwd=tmp_path)
    second = run_cli("bootstrap", "--email", email.upper(), env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    token_one = first.stdout.strip().splitlines()[-1]
    token_two = second.stdout.strip().splitlines()[-1]
    assert token_one.startswith("sg-adm-") and token_two.startswith("sg-adm-")
    assert token_one != token_two

    users, digests = asyncio.run(_bootstrap_rows(settings, email))
    assert users == 1
    # Only digests are stored, and they are the digests of exactly the printed tokens.
    assert {
        secret_digest(settings.secret, token_one),
        secret_digest(settings.secret, token_two),
    } <= digests
    assert token_one not in digests


def test_bootstrap_on_a_fresh_directory_needs_no_configuration(tmp_path: Path) -> None:
    result = run_cli("bootstrap", "--email", "a@example.com", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "sluicegate.db").is_file()
    assert (tmp_path / "sluicegate.secret").is_file()


def test_bootstrap_says_which_database_and_secret_and_needs_no_providers_file(
    tmp_path: Path,
) -> None:
    env = {"SLUICEGATE_PROVIDERS": str(tmp_path / "elsewhere" / "providers.yaml")}
    first = run_cli("bootstrap", "--email", "a@example.com", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    database, secret = (tmp_path / "sluicegate.db").resolve(), tmp_path / "sluicegate.secret"
    assert f"database: sqlite+aiosqlite:///{database} (created now)" in first.stderr
    assert f"secret key: {secret.resolve()} (generated now)" in first.stderr
    again = run_cli("bootstrap", "--email", "a@example.com", env=env, cwd=tmp_path)
    assert f"database: sqlite+aiosqlite:///{database}\n" in again.stderr
    assert f"secret key: {secret.resolve()}\n" in again.stderr
    assert secret.read_text() not in first.stderr + first.stdout


def test_bootstrap_elsewhere_than_the_running_gateway_refuses_to_make_a_new_database(
    start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    served, elsewhere = tmp_path / "served", tmp_path / "elsewhere"
    served.mkdir()
    elsewhere.mkdir()
    gateway = start_gateway(cwd=served)
    port = gateway.base_url.rsplit(":", 1)[1]
    result = run_cli(
        "bootstrap", "--email", "a@example.com", env={"SLUICEGATE_PORT": port}, cwd=elsewhere
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "SLUICEGATE_DATABASE_PATH" in line and f"answers on port {port}" in line
    assert not list(elsewhere.iterdir()), "nothing is created"
    # Where the gateway runs, bootstrap works and its token is accepted by it.
    result = run_cli(
        "bootstrap", "--email", "a@example.com", env={"SLUICEGATE_PORT": port}, cwd=served
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    me = httpx.get(
        gateway.base_url + "/api/v1/auth/me", headers={"authorization": f"Bearer {token}"}
    )
    assert me.status_code == 200, me.text


def test_serve_without_models_warns(start_gateway: GatewayStarter, tmp_path: Path) -> None:
    gateway = start_gateway(cwd=tmp_path)
    assert "no model is configured" in gateway.log()


def test_unreachable_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        env={"SLUICEGATE_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/x"},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sluicegate: SLUICEGATE_DATABASE_URL: cannot connect to")
    assert "127.0.0.1" in lines[0] and "Traceback" not in result.stderr


def test_unreachable_redis_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", env={"SLUICEGATE_REDIS_URL": "redis://127.0.0.1:1/0"}, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("sluicegate: SLUICEGATE_REDIS_URL: cannot connect to")
    assert "Traceback" not in result.stderr


def test_worker_without_redis_says_serve_stores_usage_itself(tmp_path: Path) -> None:
    result = run_cli("worker", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "sluicegate: SLUICEGATE_REDIS_URL: the worker drains the Redis usage streams; without "
        "Redis, `serve` stores usage itself and needs no worker"
    )


def test_bad_setting_stops_serve_with_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", env={"SLUICEGATE_PORT": "eighty"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sluicegate: SLUICEGATE_PORT: Input should be a valid integer, unable to parse string "
        "as an integer"
    ]


def test_migrate_reports_the_revision(settings: Settings, tmp_path: Path) -> None:
    result = run_cli("migrate", env=settings_env(settings), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"is at revision {head}" in result.stdout
    assert "password" not in result.stdout
