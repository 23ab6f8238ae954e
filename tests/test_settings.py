from pathlib import Path

import pytest

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.outbound_proxy import PROXY_VARIABLES, OutboundProxy
from sluicegate.settings import load_settings, secret_file_for


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from no SLUICEGATE_* variable nor outbound proxy variable, in an empty
    directory (no .env)."""
    import os

    for name in list(os.environ):
        if name.startswith("SLUICEGATE_") or name.lower() in PROXY_VARIABLES:
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


# --- mail ---------------------------------------------------------------------------------------

SMTP_PASSWORD = "hunter2-very-secret"


def test_smtp_is_off_unless_configured() -> None:
    settings = load_settings()
    assert settings.smtp_url is None and settings.smtp is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"smtps://alerts:{SMTP_PASSWORD}@mail.example.com",
            ("mail.example.com", 465, True, False, "alerts"),
        ),
        (
            f"smtp://alerts:{SMTP_PASSWORD}@mail.example.com:2587",
            ("mail.example.com", 2587, False, True, "alerts"),
        ),
        ("smtp://relay.internal.example", ("relay.internal.example", 587, False, True, None)),
        ("smtp://127.0.0.1:2525?starttls=false", ("127.0.0.1", 2525, False, False, None)),
        (
            f"smtp://alerts:{SMTP_PASSWORD}@localhost:25?starttls=false",
            ("localhost", 25, False, False, "alerts"),
        ),
        ("smtp://[::1]:25?starttls=false", ("::1", 25, False, False, None)),
    ],
)
def test_an_smtp_url_names_the_server_its_tls_and_the_login(
    monkeypatch: pytest.MonkeyPatch, url: str, expected: tuple[object, ...]
) -> None:
    monkeypatch.setenv("SLUICEGATE_SMTP_URL", url)
    monkeypatch.setenv("SLUICEGATE_SMTP_FROM", "Sluicegate Alerts <Alerts@Example.com>")
    settings = load_settings()
    server = settings.smtp
    assert server is not None
    assert (server.host, server.port, server.implicit_tls, server.starttls, server.username) == (
        expected
    )
    assert settings.smtp_from == "Sluicegate Alerts <alerts@example.com>"
    assert (server.sender_name, server.sender_address) == (
        "Sluicegate Alerts",
        "alerts@example.com",
    )
    # The password is in none of the ways settings are shown or logged.
    for shown in (repr(settings), str(settings), repr(server), str(settings.model_dump())):
        assert SMTP_PASSWORD not in shown
    if server.username is not None:
        assert server.password == SMTP_PASSWORD


def test_a_percent_encoded_password_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SLUICEGATE_SMTP_URL", "smtps://me%40example.com:p%40ss%3Aword@mx.example.com"
    )
    monkeypatch.setenv("SLUICEGATE_SMTP_FROM", "alerts@example.com")
    server = load_settings().smtp
    assert server is not None
    assert (server.username, server.password) == ("me@example.com", "p@ss:word")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mail.example.com:587", "must start with smtps:// (TLS"),
        ("https://mail.example.com", "must start with smtps://"),
        ("smtp://", "names no host"),
        ("smtp://:587", "names no host"),
        ("smtp://mail.example.com:99999", "port that is not a number"),
        ("smtp://mail example.com", "neither a DNS name nor an IP address"),
        ("smtp://mail.example.com/inbox", "must not have a path"),
        ("smtp://mail.example.com?tls=no", "takes only the option ?starttls=false"),
        ("smtp://mail.example.com?starttls=maybe", "?starttls must be true or false"),
        ("smtps://mail.example.com?starttls=false", "?starttls is for smtp:// only"),
        ("smtp://alerts@mail.example.com", "names a user but no password"),
        (
            f"smtp://alerts:{SMTP_PASSWORD}@mail.example.com?starttls=false",
            "would send the password unencrypted to mail.example.com",
        ),
    ],
)
def test_a_bad_smtp_url_names_the_problem_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch, url: str, fragment: str
) -> None:
    monkeypatch.setenv("SLUICEGATE_SMTP_URL", url)
    monkeypatch.setenv("SLUICEGATE_SMTP_FROM", "alerts@example.com")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == "SLUICEGATE_SMTP_URL"
    assert fragment in caught.value.problem
    assert SMTP_PASSWORD not in str(caught.value)


def test_smtp_needs_a_from_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_SMTP_URL", "smtps://mail.example.com")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == "SLUICEGATE_SMTP_FROM"
    assert "is required with SLUICEGATE_SMTP_URL" in caught.value.problem


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("alerts", "is not a mail address"),
        ("alerts@localhost", "is not a mail address"),
        ("a@example.com, b@example.com", "must be an address"),
        ('"Sluicegate" <alerts@example.com>', "must be an address"),
        ("Sluicegate\r\nBcc: x@evil.example <alerts@example.com>", "must be an address"),
        ("Sluicegate <alerts@exa mple.com>", "is not a mail address"),
    ],
)
def test_a_bad_from_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, fragment: str
) -> None:
    monkeypatch.setenv("SLUICEGATE_SMTP_URL", "smtps://mail.example.com")
    monkeypatch.setenv("SLUICEGATE_SMTP_FROM", value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == "SLUICEGATE_SMTP_FROM"
    assert fragment in caught.value.problem


def test_empty_smtp_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEGATE_SMTP_URL", "")
    monkeypatch.setenv("SLUICEGATE_SMTP_FROM", "")
    assert load_settings().smtp is None


# --- outbound proxy -----------------------------------------------------------------------------

PROXY_PASSWORD = "pr0xy-very-secret"


def test_the_standard_proxy_variables_are_read_in_either_spelling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://gateway:{PROXY_PASSWORD}@proxy.corp:3128")
    monkeypatch.setenv("http_proxy", "proxy.corp:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    settings = load_settings()
    proxies = settings.outbound_proxies
    assert proxies.https is not None
    assert (proxies.https.url, proxies.https.variable) == ("http://proxy.corp:3128", "HTTPS_PROXY")
    assert (proxies.https.authorization or "").startswith("Basic ")
    assert proxies.http == OutboundProxy("proxy.corp", 8080, "HTTP_PROXY")
    assert proxies.for_origin("https", "api.openai.com", 443) == proxies.https
    assert proxies.for_origin("https", "vllm.internal.example", 443) is None
    assert proxies.for_origin("http", "localhost", 11434) is None
    # The password is in none of the ways settings are shown or logged.
    for shown in (repr(settings), str(settings), repr(proxies), str(settings.model_dump())):
        assert PROXY_PASSWORD not in shown


def test_no_proxy_variable_means_direct_connections() -> None:
    proxies = load_settings().outbound_proxies
    assert proxies.for_origin("https", "api.openai.com", 443) is None
    assert proxies.for_origin("http", "127.0.0.1", 8080) is None


def test_the_lowercase_spelling_wins_when_both_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper.corp:3128")
    monkeypatch.setenv("https_proxy", "http://lower.corp:3128")
    monkeypatch.setenv("NO_PROXY", "upper.example")
    monkeypatch.setenv("no_proxy", "lower.example")
    settings = load_settings()
    proxies = settings.outbound_proxies
    assert proxies.https is not None and proxies.https.host == "lower.corp"
    assert settings.no_proxy == "lower.example"


def test_an_empty_proxy_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "")
    monkeypatch.setenv("HTTP_PROXY", "")
    settings = load_settings()
    assert settings.https_proxy is None and settings.http_proxy is None


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("HTTPS_PROXY", "https://proxy.corp:3128", "only http:// proxy URLs are supported"),
        ("https_proxy", "socks5://proxy.corp:1080", "must be an http:// proxy URL"),
        ("HTTP_PROXY", f"http://gateway:{PROXY_PASSWORD}@proxy.corp:99999", "port"),
        ("HTTP_PROXY", f"http://gateway:{PROXY_PASSWORD}@proxy.corp:3128/x", "without a path"),
        ("NO_PROXY", "localhost,10.0.0.0/33", "'10.0.0.0/33' is neither a host name"),
        ("no_proxy", "api.example.com:https", "has a port that is not a number"),
    ],
)
def test_a_bad_proxy_setting_stops_start_up_naming_the_variable_never_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert caught.value.setting == variable.upper()
    assert fragment in caught.value.problem
    assert PROXY_PASSWORD not in str(caught.value)
    assert "\n" not in str(caught.value)
