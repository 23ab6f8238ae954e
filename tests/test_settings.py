from pathlib import Path

import pytest

from sluicegate.core.errors import ConfigurationError
from sluicegate.settings import load_settings, secret_file_for


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from no SLUICEGATE_* variable, in an empty directory (no .env)."""
    import os

    for name in list(os.environ):
        if name.startswith("SLUICEGATE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.embedded_database
    assert settings.redis_url is None
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'sluicegate.db'}"
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8080, 1)


def test_embedded_secret_is_generated_once_and_kept_beside_the_data(tmp_path: Path) -> None:
    first = load_settings()
    second = load_settings()
    assert first.secret == second.secret
    path = secret_file_for(first)
    assert path == tmp_path / "sluicegate.secret"
    assert path.stat().st_mode & 0o777 == 0o600


def test_database_path_is_configurable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SLUICEGATE_DATABASE_PATH", str(tmp_path / "data" / "gw.db"))
    settings = load_settings()
    assert settings.resolved_database_url.endswith("/data/gw.db")
    assert secret_file_for(settings) == tmp_path / "data" / "gw.secret"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("SLUICEGATE_PORT", "abc", "valid integer"),
        ("SLUICEGATE_PORT", "70000", "less than or equal to 65535"),
        ("SLUICEGATE_WORKERS", "0", "greater than or equal to 1"),
        ("SLUICEGATE_DATABASE_URL", "mysql://x/y", "postgresql+asyncpg://"),
        ("SLUICEGATE_REDIS_URL", "http://x", "redis://"),
        ("SLUICEGATE_SECRET_KEY", "short", "at least 32 characters"),
        ("SLUICEGATE_PROVIDERS", "/nonexistent/providers.yaml", "does not exist"),
        ("SLUICEGATE_LOG_LEVEL", "loud", "'debug'"),
        ("SLUICEGATE_RUN_WORKER", "perhaps", "valid boolean"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_problem(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == variable
    assert fragment in caught.value.problem
    assert "\n" not in str(caught.value)


def test_postgres_needs_an_explicit_secret_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1/db")
    settings = load_settings()
    with pytest.raises(ConfigurationError) as caught:
        _ = settings.secret
    assert caught.value.setting == "SLUICEGATE_SECRET_KEY"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("SLUICEGATE_PORT=9191\n")
    assert load_settings().port == 9191


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "PROVIDERS", "SECRET_KEY"):
        monkeypatch.setenv(f"SLUICEGATE_{name}", "")
    settings = load_settings()
    assert settings.embedded_database and settings.redis_url is None and settings.providers is None


def test_several_workers_need_redis() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(_env_file=None, workers=2, secret_key="x" * 40)
    assert raised.value.setting == "SLUICEGATE_WORKERS"
    assert "SLUICEGATE_REDIS_URL" in raised.value.problem
    assert (
        load_settings(
            _env_file=None, workers=2, redis_url="redis://127.0.0.1:6379/0", secret_key="x" * 40
        ).workers
        == 2
    )
