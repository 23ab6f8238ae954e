"""The settings a command that serves no model runs with, said on stderr (which database, which
secret key), so a run in the wrong place (another directory, another environment) shows at once.
Shared by cli.py and audit_commands.py."""

from __future__ import annotations

import sys

from sluicegate.settings import Settings, read_settings, secret_file_for, settle_secret


def settings_said() -> Settings:
    """The settings of a command that serves no model (no providers file read), after saying
    on stderr which database and secret key they point at (see `say_where`)."""
    settings = read_settings(providers=None)
    fresh = settings.embedded_database and not settings.database_path.expanduser().exists()
    given = settings.secret_key is not None
    kept = given or (settings.is_sqlite and secret_file_for(settings).exists())
    settings = settle_secret(settings)
    say_where(settings, fresh=fresh, secret_given=given, secret_kept=kept)
    return settings


def say_where(settings: Settings, *, fresh: bool, secret_given: bool, secret_kept: bool) -> None:
    """On stderr: the database and the secret key a command used, so a run in the wrong place
    (another directory, another environment) shows at once."""
    from sluicegate.runtime import redacted_url

    database = redacted_url(settings.resolved_database_url)
    print(f"database: {database}{' (created now)' if fresh else ''}", file=sys.stderr)
    if secret_given:
        source = "SLUICEGATE_SECRET_KEY"
    else:
        source = f"{secret_file_for(settings)}{'' if secret_kept else ' (generated now)'}"
    print(f"secret key: {source}", file=sys.stderr)
