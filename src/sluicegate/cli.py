"""The `sluicegate` command: serve, worker, migrate, bootstrap, mock-upstream, audit, reconcile,
version.

Every failure a person can fix prints one line naming the setting and the cause, and exits
non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date

from sluicegate import __version__
from sluicegate.audit_commands import add_audit_commands
from sluicegate.command_settings import say_where, settings_said
from sluicegate.core.errors import ConfigurationError
from sluicegate.settings import (
    Settings,
    load_provider_settings,
    load_settings,
    read_settings,
    secret_file_for,
    settle_secret,
)

EXIT_CONFIGURATION = 2
EXIT_UNAVAILABLE = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except ConfigurationError as exc:
        print(f"sluicegate: {exc.setting}: {exc.problem}", file=sys.stderr)
        return EXIT_CONFIGURATION
    except DependencyUnavailable as exc:
        print(f"sluicegate: {exc.setting}: {exc.problem}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


class DependencyUnavailable(ConfigurationError):
    """A configured service (database, Redis) does not answer."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluicegate",
        description="Self-hosted multi-tenant LLM gateway. Settings come from SLUICEGATE_* "
        "environment variables (see docs/configuration.md); flags override them.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway (migrates first unless SLUICEGATE_MIGRATE_ON_START=false)",
        description="Run the gateway. Without SLUICEGATE_DATABASE_URL and SLUICEGATE_REDIS_URL "
        "it runs embedded: SQLite in ./sluicegate.db and in-process counters.",
    )
    serve.add_argument("--host", help="interface to bind (SLUICEGATE_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (SLUICEGATE_PORT, default 8080)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (SLUICEGATE_WORKERS, default 1)"
    )
    serve.set_defaults(command=_serve)

    worker = commands.add_parser(
        "worker",
        help="drain the usage streams, apply the usage retention, evaluate and deliver alerts",
        description="Run the metering work on its own until SIGTERM or SIGINT: read the usage "
        "events the gateways settled into Redis streams, store them with their rollups, and "
        "acknowledge them after commit; remove raw usage rows past "
        "SLUICEGATE_USAGE_RETENTION_MONTHS; evaluate the condition alerts and deliver the alert "
        "outbox (webhooks, Slack, Discord). Run any number of them; `serve` does the same work "
        "itself unless SLUICEGATE_RUN_WORKER=false.",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's Prometheus metrics (drain lag, backlog) on this port",
    )
    worker.set_defaults(command=_worker)

    migrate = commands.add_parser(
        "migrate",
        help="upgrade the database schema to the latest revision",
        description="Upgrade the configured database (Postgres or SQLite) to the latest schema.",
    )
    migrate.set_defaults(command=_migrate)

    bootstrap = commands.add_parser(
        "bootstrap",
        help="create a platform admin and print a new admin token",
        description="Create the user if missing, make them a platform admin, and print a new "
        "admin token as the last line of output. Run again for another token.",
    )
    bootstrap.add_argument("--email", required=True, help="the admin's email address")
    bootstrap.set_defaults(command=_bootstrap)

    mock = commands.add_parser(
        "mock-upstream",
        help="run the mock OpenAI/Anthropic upstream for tests and demos",
        description="Serve the mock upstream: OpenAI chat, completions, embeddings, models and "
        "Anthropic messages, with deterministic tokens and failure modes chosen per request or "
        "programmed server-wide with PUT /_mock/behavior (see docs/proxy.md).",
    )
    mock.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    mock.add_argument("--port", type=int, default=18080, help="port (default 18080)")
    mock.set_defaults(command=_mock_upstream)

    add_audit_commands(commands)

    reconcile = commands.add_parser(
        "reconcile",
        help="check everything derived from the usage rows against them; --repair rebuilds it",
        description="Recompute, from the usage rows, the ledger's usage debits, the 15-minute, "
        "daily and org-wide daily rollups, and (with Redis) the budget and enforced credit "
        "counters; print each comparison and exit 1 naming the first mismatch. Read-only "
        "unless --repair: then each org's derived rows are rebuilt from its usage rows in one "
        "transaction (audited as usage.reconcile_repair) and differing counters are rebuilt "
        "when next used. Rows past SLUICEGATE_USAGE_RETENTION_MONTHS are not checked.",
    )
    reconcile.add_argument("--org", help="one organization (org_...); default every one")
    reconcile.add_argument(
        "--since",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="check from this day (midnight UTC; days in the org's zone from the first whole "
        "one); default all that is kept",
    )
    reconcile.add_argument(
        "--repair", action="store_true", help="rebuild what differs from the usage rows"
    )
    reconcile.set_defaults(command=_reconcile)

    version = commands.add_parser(
        "version", help="print the version", description="Print the version."
    )
    version.set_defaults(command=_version)
    return parser


def _serve(args: argparse.Namespace) -> int:
    # Flags become environment so that every uvicorn worker process reads the same settings.
    for flag, name in (("host", "HOST"), ("port", "PORT"), ("workers", "WORKERS")):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"SLUICEGATE_{name}"] = str(value)
    settings = load_settings()

    from sluicegate.core.logs import configure_logging

    configure_logging(settings.log_level)
    if settings.migrate_on_start:
        asyncio.run(_upgrade_database(settings))
    asyncio.run(_check_dependencies(settings))
    settings.secret  # noqa: B018 - raises ConfigurationError when the secret key is missing
    # A bad providers file stops start-up with one line; none is worth a warning.
    if not load_provider_settings(settings).models:
        logging.getLogger("sluicegate").warning(
            "no model is configured (SLUICEGATE_PROVIDERS names no providers file, or it lists "
            "no model): every proxied call will answer 404 model_not_found"
        )
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before any worker imports prometheus_client (see core/metrics.py).
        metrics_dir = tempfile.mkdtemp(prefix="sluicegate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    import uvicorn

    uvicorn.run(
        "sluicegate.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings()

    from sluicegate.core.logs import configure_logging

    configure_logging(settings.log_level)
    asyncio.run(_check_dependencies(settings))
    if settings.redis_url is None:
        # Without Redis the gateway writes usage rows itself (batched, in its own process), so
        # there is no stream to drain: only the retention would be left, and serve runs it.
        raise ConfigurationError(
            "SLUICEGATE_REDIS_URL",
            "the worker drains the Redis usage streams; without Redis, `serve` stores usage "
            "itself and needs no worker",
        )
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=settings.host)
    asyncio.run(_run_worker(settings))
    return 0


async def _run_worker(settings: Settings) -> None:
    import signal

    from sluicegate.runtime import Runtime
    from sluicegate.usage_worker import UsageWorker

    runtime = Runtime.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    worker = UsageWorker(runtime)
    log = logging.getLogger("sluicegate.worker")
    try:
        await worker.start()
        log.info("usage worker started")
        await stop.wait()
        log.info("usage worker stopping")
    finally:
        await worker.close()
        await runtime.close()


def _migrate(_args: argparse.Namespace) -> int:
    settings = load_settings()
    revision = asyncio.run(_upgrade_database(settings))
    from sluicegate.runtime import redacted_url

    print(f"database {redacted_url(settings.resolved_database_url)} is at revision {revision}")
    return 0


def _bootstrap(args: argparse.Namespace) -> int:
    # It serves no model: the providers file is neither read nor needed.
    settings = read_settings(providers=None)
    fresh = settings.embedded_database and not settings.database_path.expanduser().exists()
    if fresh and _gateway_answers(settings.port):
        raise ConfigurationError(
            "SLUICEGATE_DATABASE_PATH",
            f"there is no {settings.database_path.expanduser().resolve()} here, yet a gateway "
            f"answers on port {settings.port}: its admin would not be in a database made here. "
            "Run bootstrap where that gateway runs (or with its SLUICEGATE_DATABASE_PATH)",
        )
    given = settings.secret_key is not None
    kept = given or (settings.is_sqlite and secret_file_for(settings).exists())
    settings = settle_secret(settings)
    asyncio.run(_upgrade_database(settings))
    settings.secret  # noqa: B018 - raises ConfigurationError when the secret key is missing
    say_where(settings, fresh=fresh, secret_given=given, secret_kept=kept)
    user_id, created, secret = asyncio.run(_create_admin(settings, args.email))
    print(f"{'created' if created else 'found'} user {user_id} ({args.email.strip().lower()})")
    print("new admin token (shown once; use it as 'Authorization: Bearer <token>'):")
    print(secret)
    return 0


def _gateway_answers(port: int) -> bool:
    """Whether a gateway answers on this machine's `port` (loopback)."""
    import httpx

    try:
        # Loopback, never through an outbound proxy the environment may name (HTTP_PROXY).
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False)
        return answer.status_code == 200
    except httpx.HTTPError:
        return False


def _reconcile(args: argparse.Namespace) -> int:
    settings = settings_said()
    asyncio.run(_check_dependencies(settings))
    mismatch = asyncio.run(_run_reconcile(settings, args.org, args.since, args.repair))
    if mismatch is not None:
        print(f"reconcile: first mismatch: {mismatch}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("reconcile: everything agrees with the usage rows")
    return 0


async def _run_reconcile(
    settings: Settings, org_id: str | None, since: date | None, repair: bool
) -> str | None:
    from sluicegate.reconciliation import reconcile
    from sluicegate.runtime import Runtime

    runtime = Runtime.build(settings)
    try:
        return await reconcile(runtime, org_id, since, repair, print)
    finally:
        await runtime.close()


def _mock_upstream(args: argparse.Namespace) -> int:
    from sluicegate.mockupstream.server import run

    run(host=args.host, port=args.port)
    return 0


def _version(_args: argparse.Namespace) -> int:
    print(f"sluicegate {__version__}")
    return 0


def _database_setting(settings: Settings) -> str:
    return "SLUICEGATE_DATABASE_PATH" if settings.embedded_database else "SLUICEGATE_DATABASE_URL"


async def _upgrade_database(settings: Settings) -> str:
    from sqlalchemy import text

    from sluicegate.core.db import make_engine
    from sluicegate.migrate import current_revision, upgrade
    from sluicegate.runtime import describe_failure, redacted_url

    if settings.embedded_database:
        settings.database_path.expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url, pool_size=1)
    try:
        try:
            async with asyncio.timeout(15):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            raise DependencyUnavailable(
                _database_setting(settings),
                f"cannot connect to {redacted_url(settings.resolved_database_url)}: "
                f"{describe_failure(exc)}",
            ) from None
        before = await current_revision(engine)
        await upgrade(engine, audit_key=_audit_key(settings))
        after = await current_revision(engine) or "base"
        if before != after:
            logging.getLogger("sluicegate.migrate").info(
                "database upgraded", extra={"from_revision": before or "base", "to_revision": after}
            )
        return after
    finally:
        await engine.dispose()


def _audit_key(settings: Settings) -> bytes | None:
    """The audit key when a secret key is set (a migration may need it to seal audit chains)."""
    from sluicegate.audit.chain import audit_key

    return audit_key(settings.secret) if settings.secret_key is not None else None


async def _check_dependencies(settings: Settings) -> None:
    from sluicegate.runtime import Runtime, redacted_url

    runtime = Runtime.build(settings)
    try:
        problem = await runtime.check_database()
        if problem is not None:
            raise DependencyUnavailable(
                _database_setting(settings),
                f"cannot connect to {redacted_url(settings.resolved_database_url)}: {problem}",
            )
        problem = await runtime.check_redis()
        if problem is not None:
            raise DependencyUnavailable(
                "SLUICEGATE_REDIS_URL",
                f"cannot connect to {redacted_url(settings.redis_url or '')}: {problem}",
            )
    finally:
        await runtime.close()


async def _create_admin(settings: Settings, email: str) -> tuple[str, bool, str]:
    from sluicegate.core.db import transaction
    from sluicegate.identity.service import ensure_user, issue_admin_token
    from sluicegate.runtime import Runtime

    runtime = Runtime.build(settings)
    try:
        async with transaction(runtime.sessions) as session:
            user, created = await ensure_user(session, email, platform_admin=True)
            _token, secret = await issue_admin_token(
                session, user, pepper=settings.secret, name="bootstrap"
            )
            return user.id, created, secret
    finally:
        await runtime.close()


if __name__ == "__main__":
    raise SystemExit(main())
