"""Migrations round-trip on both databases, the models agree with them exactly, and a release
build carries them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect

from sluicegate.core.db import make_engine
from sluicegate.metering.partitions import PARTITION_PREFIX
from sluicegate.migrate import (
    SCRIPT_LOCATION,
    alembic_config,
    current_revision,
    downgrade,
    include_name,
    upgrade,
)
from sluicegate.tables import metadata
from tests.support import clean_environment

REPOSITORY = Path(__file__).resolve().parents[1]
# Building and installing take seconds on a quiet machine; the bound only stops a step that hangs.
BUILD_STEP_TIMEOUT_SECONDS = 600

EXPECTED_TABLES = {
    "alert_channels",
    "alert_rules",
    "alerts",
    "alert_deliveries",
    "alert_delivery_attempts",
    "users",
    "admin_tokens",
    "organizations",
    "groups",
    "memberships",
    "role_bindings",
    "api_keys",
    "usage_events",
    "ledger_entries",
    "audit_events",
    "audit_heads",
    "invitations",
    "budgets",
    "policies",
    "policy_bindings",
    "usage_rollups",
    "usage_daily_rollups",
    "usage_org_daily_rollups",
    "routing_overrides",
}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database_url(
    request: pytest.FixtureRequest, postgres_database: Callable[[], str], tmp_path: Path
) -> str:
    if request.param == "postgres":
        return postgres_database()
    return f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, metadata))


def _table_names(connection: Connection) -> set[str]:
    names = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return {name for name in names if not name.startswith(PARTITION_PREFIX)}


async def test_upgrade_downgrade_upgrade_and_models_match(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            assert await conn.run_sync(_table_names) == EXPECTED_TABLES

        await downgrade(engine, "base")
        assert await current_revision(engine) is None
        async with engine.connect() as conn:
            assert await conn.run_sync(_table_names) == set()

        await upgrade(engine)
        assert await current_revision(engine) == head
        async with engine.connect() as conn:
            differences = await conn.run_sync(_schema_differences)
        assert differences == [], f"models and migrations disagree: {differences}"
    finally:
        await engine.dispose()


async def test_upgrade_is_idempotent(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url, pool_size=1)
    try:
        await upgrade(engine)
        await upgrade(engine)
        assert await current_revision(engine) is not None
    finally:
        await engine.dispose()


def test_a_checkout_runs_the_scripts_alembic_ini_names() -> None:
    """From source, the gateway and developers' `alembic revision` use the same directory."""
    configured = Config(str(REPOSITORY / "alembic.ini")).get_main_option("script_location")
    assert configured is not None
    assert SCRIPT_LOCATION == Path(configured) == REPOSITORY / "migrations"
    assert any(SCRIPT_LOCATION.joinpath("versions").glob("0001_*.py"))


def _run(*command: str | Path, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_STEP_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_an_installed_release_build_migrates_an_empty_database(tmp_path: Path) -> None:
    """Built as a release is (the sdist, then the wheel from it) and installed into a fresh
    environment, `sluicegate migrate` finds the scripts inside the package: no checkout needed."""
    venv, dist = tmp_path / "venv", tmp_path / "dist"
    python = venv / "bin" / "python"
    env = clean_environment()
    env.pop("PYTHONPATH", None)  # the suite may put this checkout's src/ first; the venv must not
    # The dependencies come from the suite's environment instead of a download.
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path, env=env)
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    build_requires = pyproject["build-system"]["requires"]
    _run(python, "-m", "pip", "install", "--quiet", *build_requires, cwd=tmp_path, env=env)
    build_sdist = "import sys, hatchling.build as b; b.build_sdist(sys.argv[1])"
    _run(python, "-c", build_sdist, dist, cwd=REPOSITORY, env=env)
    (sdist,) = dist.glob("sluicegate-*.tar.gz")
    wheel_args = ["--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir", dist, sdist]
    _run(python, "-m", "pip", "wheel", *wheel_args, cwd=tmp_path, env=env)
    (wheel,) = dist.glob("sluicegate-*.whl")
    # --ignore-installed: the suite's own sluicegate shows through the system site-packages.
    install_args = ["--quiet", "--no-deps", "--ignore-installed", wheel]
    _run(python, "-m", "pip", "install", *install_args, cwd=tmp_path, env=env)
    where = (
        "import sluicegate, sluicegate.migrate as m\n"
        "print(sluicegate.__file__, m.SCRIPT_LOCATION, sep='\\n')"
    )
    located = _run(python, "-c", where, cwd=tmp_path, env=env).splitlines()
    package, scripts = (Path(line) for line in located)
    assert package.is_relative_to(venv), f"sluicegate imported from {package}, not the venv"
    assert scripts == package.parent / "_migrations"

    database = tmp_path / "empty.db"
    migrate_env = env | {"SLUICEGATE_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    reported = _run(venv / "bin" / "sluicegate", "migrate", cwd=tmp_path, env=migrate_env)

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert f"is at revision {head}" in reported
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            assert _table_names(connection) == EXPECTED_TABLES
            assert MigrationContext.configure(connection).get_current_revision() == head
    finally:
        engine.dispose()


async def test_upgrading_a_live_database_builds_the_rollups_from_its_usage_rows(
    empty_database_url: str,
) -> None:
    """0005 on a database that already holds usage (written before rollups existed): the rows
    move into the new table (monthly partitions on Postgres) and both rollups are summed from
    them, equal to what the writer itself would have built."""
    from sqlalchemy import text

    from sluicegate.audit.chain import audit_key
    from sluicegate.metering.writer import store_usage
    from sluicegate.orgs.service import update_organization
    from sluicegate.runtime import Runtime
    from tests.conftest import TEST_SECRET_KEY, make_settings
    from tests.factories import make_tenant
    from tests.metering.books import read_books
    from tests.metering.test_drain import events
    from tests.metering.test_timezone_change import daily_requests

    engine = make_engine(empty_database_url, pool_size=1)
    runtime = Runtime.build(make_settings(database_url=empty_database_url))
    try:
        await upgrade(engine)
        tenant = await make_tenant(runtime)
        async with runtime.unit_of_work() as session:
            await update_organization(
                session, tenant.actor, tenant.org_id, {"timezone": "Asia/Kathmandu"}
            )
        async with runtime.unit_of_work() as session:
            await store_usage(session, events(tenant, 40))
        async with runtime.sessions() as session:
            written = await read_books(session, tenant.org_id)
        days = await daily_requests(runtime, tenant.org_id)

        await downgrade(engine, "0004")
        async with engine.connect() as conn:
            assert "usage_rollups" not in await conn.run_sync(_table_names)
            count = await conn.scalar(text("SELECT count(*) FROM usage_events"))
        assert count == 40

        # The org's audit events ask 0008 to seal their chain: it needs the secret key.
        await upgrade(engine, audit_key=audit_key(TEST_SECRET_KEY.encode()))
        await runtime.engine.dispose()  # its connections knew the old table
        async with runtime.sessions() as session:
            rebuilt = await read_books(session, tenant.org_id)
        assert rebuilt == written
        rebuilt.assert_consistent()
        assert await daily_requests(runtime, tenant.org_id) == days
    finally:
        await runtime.close()
        await engine.dispose()


async def test_0008_seals_existing_audit_chains_once_and_needs_the_secret_key(
    empty_database_url: str,
) -> None:
    """A chain written before keyed links (unkeyed, its head unsealed) is sealed by the upgrade
    and keeps verifying; new events link keyed after it. Without the key the upgrade stops."""
    from datetime import UTC, datetime

    from sluicegate.audit.chain import GENESIS_HASH, UNKEYED, audit_key, link_hash
    from sluicegate.audit.models import AuditEvent, AuditHead
    from sluicegate.audit.service import record, verify_chain
    from sluicegate.runtime import Runtime
    from tests.conftest import TEST_SECRET_KEY, make_settings

    engine = make_engine(empty_database_url, pool_size=1)
    runtime = Runtime.build(make_settings(database_url=empty_database_url))
    try:
        await upgrade(engine, "0007")
        previous, rows = GENESIS_HASH, []
        for seq in (1, 2, 3):
            fields = {
                "id": f"aud_legacy_{seq}",
                "org_id": "org_legacy",
                "seq": seq,
                "created_at": datetime(2026, 11, 1, 12, seq, tzinfo=UTC),
                "actor_user_id": None,
                "action": "group.create",
                "target_type": "group",
                "target_id": f"grp_{seq}",
                "group_id": None,
                "before": None,
                "after": {"name": f"g{seq}"},
                "ip": None,
                "user_agent": None,
                "request_id": None,
            }
            digest = link_hash(previous, fields, UNKEYED)
            rows.append({**fields, "prev_hash": previous, "hash": digest})
            previous = digest
        async with engine.begin() as conn:
            await conn.execute(AuditEvent.__table__.insert(), rows)
            await conn.execute(
                AuditHead.__table__.insert().values(org_id="org_legacy", seq=3, hash=previous)
            )

        with pytest.raises(RuntimeError, match="SLUICEGATE_SECRET_KEY"):
            await upgrade(engine)
        assert await current_revision(engine) == "0007"
        await upgrade(engine, audit_key=audit_key(TEST_SECRET_KEY.encode()))

        async with runtime.sessions() as session:
            legacy = await verify_chain(session, "org_legacy")
        assert legacy.intact and legacy.checked == 3
        async with runtime.unit_of_work() as session:
            await record(
                session,
                org_id="org_legacy",
                actor_user_id=None,
                action="group.update",
                target_type="group",
                target_id="grp_1",
            )
        async with runtime.sessions() as session:
            mixed = await verify_chain(session, "org_legacy")
        assert mixed.intact and mixed.checked == 4
    finally:
        await runtime.close()
        await engine.dispose()


_DIMENSIONS = ("group_id", "key_id", "user_id", "model", "provider", "app")
_MEASURES = (
    "requests",
    "errors",
    "blocked",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_nusd",
    "latency_ms_sum",
    "ttft_ms_sum",
    "ttft_count",
)
# Each rollup table and the columns before its dimensions.
_ROLLUPS = {
    "usage_rollups": ("org_id", "bucket_start"),
    "usage_daily_rollups": ("org_id", "zone", "day"),
}
_SUMS = "count(*), sum(requests), sum(cost_nusd), sum(prompt_tokens)"


def _rollup_state(connection: Connection) -> dict[str, tuple[int, ...]]:
    """Per rollup table: its rows and its sums of requests, cost and prompt tokens; the same
    per dimension of the org-wide daily rollups; and per table, how many rows it would hold
    without the deployment."""
    from sqlalchemy import text

    state: dict[str, tuple[int, ...]] = {}
    for table, head in _ROLLUPS.items():
        row = connection.execute(text(f"SELECT {_SUMS} FROM {table}")).one()
        state[table] = tuple(int(value or 0) for value in row)
        key = ", ".join((*head, *_DIMENSIONS))
        distinct = text(f"SELECT count(*) FROM (SELECT DISTINCT {key} FROM {table}) AS keys")
        state[f"{table} without deployment"] = (int(connection.execute(distinct).scalar_one()),)
    rows = connection.execute(
        text(f"SELECT dimension, {_SUMS} FROM usage_org_daily_rollups GROUP BY dimension")
    )
    for dimension, *values in rows:
        state[f"org-wide {dimension}"] = tuple(int(value) for value in values)
    return state


def _write_rollups_of_0008(connection: Connection) -> None:
    """Rollup rows as a release before 0010 wrote them: two quarters, two days, the org-wide."""
    from sqlalchemy import column, table

    measures = dict(zip(_MEASURES, (2, 0, 0, 10, 5, 0, 7, 30, 0, 0), strict=True))
    dimensions = {"group_id": "grp_a", "key_id": "key_a", "user_id": "usr_a", "model": "m"}
    for name, head in _ROLLUPS.items():
        target = table(name, *(column(c) for c in (*head, *_DIMENSIONS, *_MEASURES)))
        first = (
            {"org_id": "org_old", "bucket_start": datetime(2026, 3, 1, 10, tzinfo=UTC)}
            if name == "usage_rollups"
            else {"org_id": "org_old", "zone": "UTC", "day": date(2026, 3, 1)}
        )
        rows = [
            {**first, **dimensions, "provider": provider, "app": "", **measures}
            for provider in ("p0", "p1")
        ]
        connection.execute(target.insert(), rows)
    org_wide = table(
        "usage_org_daily_rollups",
        *(column(c) for c in ("org_id", "zone", "dimension", "day", "value", *_MEASURES)),
    )
    doubled = {name: 2 * value for name, value in measures.items()}
    connection.execute(
        org_wide.insert(),
        [
            {"org_id": "org_old", "zone": "UTC", "dimension": name, "day": date(2026, 3, 1)}
            | {"value": "v", **doubled}
            for name in ("model", "group_id", "user_id", "provider", "app")
        ],
    )


async def test_0010_keys_rollups_by_deployment_and_a_downgrade_folds_them_back(
    empty_database_url: str,
) -> None:
    """Rollups stored before 0010 keep every sum, under deployment '', and the org-wide rollups
    gain the deployment's rows; usage two deployments served is then two rows where it was
    one; downgrading folds the rows that differ only by deployment into one, every sum kept;
    upgrading again keeps them too."""
    from sqlalchemy import text

    from sluicegate.metering.writer import store_usage
    from sluicegate.runtime import Runtime
    from tests.conftest import make_settings
    from tests.factories import make_tenant
    from tests.metering.test_drain import events

    engine = make_engine(empty_database_url, pool_size=1)
    runtime = Runtime.build(make_settings(database_url=empty_database_url))
    try:
        await upgrade(engine, "0008")
        async with engine.begin() as conn:
            await conn.run_sync(_write_rollups_of_0008)
            before = await conn.run_sync(_rollup_state)

        await upgrade(engine)
        async with engine.connect() as conn:
            upgraded = await conn.run_sync(_rollup_state)
            deployments = await conn.execute(text("SELECT DISTINCT deployment FROM usage_rollups"))
            assert deployments.scalars().all() == [""]
        assert upgraded == {**before, "org-wide deployment": (1, 4, 14, 20)}

        tenant = await make_tenant(runtime)
        batch = events(tenant, 8)  # every 7 minutes: two or three requests a quarter hour
        for n, event in enumerate(batch):
            event["routing"] = {"deployment": f"dep-{n % 2}", "attempts": 1, "fallback": False}
        async with runtime.unit_of_work() as session:
            await store_usage(session, batch)
        async with engine.connect() as conn:
            routed = await conn.run_sync(_rollup_state)
        for table in _ROLLUPS:
            assert routed[table][0] > routed[f"{table} without deployment"][0]

        await downgrade(engine, "0008")
        async with engine.connect() as conn:
            folded = await conn.run_sync(_rollup_state)
        for table in _ROLLUPS:
            assert folded[table] == (routed[f"{table} without deployment"][0], *routed[table][1:])
        assert folded == {
            **{name: sums for name, sums in routed.items() if name != "org-wide deployment"},
            **{table: folded[table] for table in _ROLLUPS},
        }

        await upgrade(engine)
        async with engine.connect() as conn:
            again = await conn.run_sync(_rollup_state)
        deployment = again.pop("org-wide deployment")
        assert again == folded
        assert deployment[1:] == folded["usage_daily_rollups"][1:]  # every sum, under ''

        # A release from before 0010, still running during a rolling upgrade, writes rollups
        # without the column: they land under no deployment.
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO usage_rollups (org_id, bucket_start, group_id, key_id, user_id, "
                    f"model, provider, app, {', '.join(_MEASURES)}) VALUES ('org_late', "
                    "'2026-03-02 10:00:00+00:00', 'g', 'k', 'u', 'm', 'p', '', "
                    f"{', '.join('1' for _ in _MEASURES)})"
                )
            )
            late = await conn.execute(
                text("SELECT deployment FROM usage_rollups WHERE org_id = 'org_late'")
            )
            assert late.scalars().all() == [""]
    finally:
        await runtime.close()
        await engine.dispose()
