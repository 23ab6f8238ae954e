"""Settings from `SLUICEGATE_*` environment variables (and `.env`), validated once at start-up."""

from __future__ import annotations

import os
import secrets
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.outbound_proxy import (
    PROXY_VARIABLES,
    OutboundProxies,
    parse_no_proxy,
    parse_proxy_url,
)
from sluicegate.smtp_url import SmtpServer, parse_sender, parse_smtp_url

if TYPE_CHECKING:
    from sluicegate.providers.config import ProviderSettings

IPNetwork = IPv4Network | IPv6Network
ENV_PREFIX = "SLUICEGATE_"
DATABASE_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# A digest pepper shorter than this is guessable; 32 characters of token_urlsafe is ~190 bits.
MIN_SECRET_KEY_LENGTH = 32
# The shipped examples' placeholders (.env.example): a deployment that kept one is refused.
PLACEHOLDER = "change-me"
HOW_TO_GENERATE = "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"


class Settings(BaseSettings):
    """Every setting of the gateway; the table in docs/configuration.md mirrors this class."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: str | None = Field(
        default=None,
        description="postgresql+asyncpg://... or sqlite+aiosqlite:///...; unset: embedded SQLite.",
    )
    database_path: Path = Field(
        default=Path("sluicegate.db"),
        description="Where the embedded SQLite database lives when DATABASE_URL is unset.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds to open a Postgres connection; a database that does not answer "
        "is reported (503 database_unavailable) after this.",
    )
    database_pool_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds a caller waits for a free pooled connection before 503.",
    )
    database_statement_timeout: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds one statement may take, waiting on the database included, before "
        "it is cancelled and the call answers 503.",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; unset: in-process counters and bus."
    )
    redis_pool_size: int = Field(default=64, ge=2, le=1000)
    redis_prefix: str = Field(default="sg", min_length=1, max_length=64, pattern=r"^[\w.:-]+$")
    providers: Path | None = Field(default=None, description="YAML file of providers and models.")
    secret_key: SecretStr | None = None
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    run_worker: bool = Field(
        default=True,
        description="serve drains the usage streams into the database itself (with Redis), "
        "applies the usage retention, evaluates and delivers alerts; `sluicegate worker` does "
        "the same separately.",
    )
    usage_claim_idle_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="A usage event a worker read and did not store for this long is taken over "
        "by another worker (its own worker died or hangs).",
    )
    usage_retention_months: int = Field(
        default=0,
        ge=0,
        le=1200,
        description="Raw usage rows (the activity feed) older than this many full months are "
        "removed; 0 keeps them forever. Rollups (analytics, budgets) are always kept.",
    )
    migrate_on_start: bool = True
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_admin_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics needs 'Authorization: Bearer <this token>'.",
    )
    min_clamped_output_tokens: int = Field(
        default=256,
        ge=1,
        description="A call without max_tokens whose worst case does not fit the budget or "
        "credit left is sent with the max_tokens that fits, if at least this many do.",
    )
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    upstream_read_timeout: float = Field(default=120.0, gt=0)
    upstream_timeout: float = Field(default=600.0, gt=0)
    routing_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Upstream attempts per request at most, fallbacks included (429, 5xx, "
        "connect errors and timeouts before the first byte are tried on the next deployment).",
    )
    routing_retry_deadline_seconds: float = Field(
        default=60.0,
        gt=0,
        description="No new attempt starts this long after the request arrived.",
    )
    routing_retry_backoff_ms: int = Field(
        default=50,
        ge=0,
        le=10_000,
        description="Base of the exponential backoff with full jitter between attempts.",
    )
    routing_allowed_fails: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Failures of a deployment within the window that cool it down.",
    )
    routing_failure_window_seconds: float = Field(default=60.0, gt=0)
    routing_cooldown_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a failing deployment is left out (longer when its Retry-After "
        "says so); then one request probes it.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    session_ttl_hours: int = Field(default=24, ge=1, le=24 * 90)
    guard_failure_mode: Literal["closed", "open"] = Field(
        default="closed",
        description="Redis down: closed refuses proxied calls (503); open admits them against "
        "per-process counters until Redis is back.",
    )
    reservation_ttl_seconds: int = Field(
        default=900,
        # It must outlive a whole call (checked against SLUICEGATE_UPSTREAM_TIMEOUT below).
        ge=10,
        le=86_400,
        description="How long a request's reservation holds budget before it is reclaimed "
        "(a crashed gateway never settles).",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs of reverse proxies whose "
        "X-Forwarded-For is believed; empty: none.",
    )

    outbound_allowed_networks: str = Field(
        default="",
        description="Comma-separated addresses or CIDRs that alert webhooks and channels set by "
        "org admins may reach although private, loopback or link-local (e.g. an internal relay); "
        "empty: only public addresses.",
    )
    audit_checkpoint_minutes: float = Field(
        default=60.0,
        ge=0,
        le=7 * 24 * 60,
        description="How often each worker signs a checkpoint of every audit chain that grew "
        "(logged, and raised as the audit.checkpoint alert); 0: never.",
    )
    alert_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description="An alert delivery still failing this long after its alert is given up.",
    )
    alert_retry_max_seconds: float = Field(
        default=300.0,
        ge=1,
        le=3600,
        description="The longest pause between two attempts of one delivery (backoff cap).",
    )
    smtp_url: SecretStr | None = Field(
        default=None,
        description="Where alert mail goes: smtps://user:password@host:465 (TLS from the start) "
        "or smtp://user:password@host:587 (STARTTLS required; ?starttls=false only for a relay "
        "the operator trusts, e.g. on loopback). Unset: no mail is sent.",
    )
    smtp_from: str | None = Field(
        default=None,
        validate_default=True,
        description="The From of alert mail: alerts@example.com, or Sluicegate "
        "<alerts@example.com>; required with SLUICEGATE_SMTP_URL.",
    )
    https_proxy: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("https_proxy", "HTTPS_PROXY"),
        description="HTTPS_PROXY: http://[user:password@]host:port of the proxy that connections "
        "to https providers go through (a CONNECT tunnel); unset: direct.",
    )
    http_proxy: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("http_proxy", "HTTP_PROXY"),
        description="HTTP_PROXY: the same, for http:// providers.",
    )
    no_proxy: str = Field(
        default="",
        validation_alias=AliasChoices("no_proxy", "NO_PROXY"),
        description="NO_PROXY: providers reached directly although a proxy is set: host names "
        "(with their subdomains), IP addresses, CIDR ranges, each with an optional :port, or *.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment once more, names matched exactly, so that of HTTPS_PROXY and
        # https_proxy the lowercase one wins (as with curl and urllib), not whichever came last.
        exact = EnvSettingsSource(settings_cls, case_sensitive=True)
        return init_settings, exact, env_settings, dotenv_settings, file_secret_settings

    @field_validator(
        "database_url",
        "redis_url",
        "providers",
        "secret_key",
        "smtp_url",
        "smtp_from",
        "metrics_token",
        "https_proxy",
        "http_proxy",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `VAR=` in a .env or compose file means "not set", not "set to the empty string".
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split("://", 1)[0]
        if "://" not in value or scheme not in DATABASE_SCHEMES:
            raise ValueError(
                f"must start with one of {', '.join(s + '://' for s in DATABASE_SCHEMES)}"
            )
        try:
            password = urlsplit(value).password
        except ValueError:
            raise ValueError("is not a database URL") from None
        if password is not None and PLACEHOLDER in unquote(password).lower():
            raise ValueError(
                "its password is the placeholder of .env.example (POSTGRES_PASSWORD); "
                "set a real one"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.split("://", 1)[0] not in REDIS_SCHEMES or "://" not in value:
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("providers")
    @classmethod
    def _providers_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist or is not a file")
        return value

    @field_validator("workers")
    @classmethod
    def _workers_share_counters(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("redis_url") is None:
            raise ValueError(
                "more than one worker needs SLUICEGATE_REDIS_URL: without Redis each worker "
                "counts on its own, so budgets and rate limits would not hold across them"
            )
        return value

    @field_validator("trusted_proxies", "outbound_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters")
        if value is not None and PLACEHOLDER in value.get_secret_value().lower():
            raise ValueError(f"is the placeholder of .env.example; {HOW_TO_GENERATE}")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_smtp_url(value.get_secret_value())
        return value

    @field_validator("https_proxy", "http_proxy")
    @classmethod
    def _proxy_url(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            parse_proxy_url(value.get_secret_value(), env_name(info.field_name or ""))
        return value

    @field_validator("no_proxy")
    @classmethod
    def _no_proxy(cls, value: str) -> str:
        parse_no_proxy(value)
        return value

    @field_validator("smtp_from")
    @classmethod
    def _smtp_from(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if info.data.get("smtp_url") is not None:
                raise ValueError(
                    "is required with SLUICEGATE_SMTP_URL: the address alert mail comes from, "
                    "e.g. alerts@example.com or Sluicegate <alerts@example.com>"
                )
            return None
        name, address = parse_sender(value)
        return f"{name} <{address}>" if name else address

    @field_validator("reservation_ttl_seconds")
    @classmethod
    def _reservations_outlive_calls(cls, value: int, info: ValidationInfo) -> int:
        # A non-streaming call may take upstream_timeout; its reservation must not expire first
        # (streams renew theirs while they run).
        timeout = info.data.get("upstream_timeout")
        if timeout is not None and value <= timeout:
            raise ValueError(
                f"must be longer than SLUICEGATE_UPSTREAM_TIMEOUT ({timeout:g} s), or calls "
                "could outlive their reservations"
            )
        return value

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.database_path.expanduser().resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def outbound_allowed(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.outbound_allowed_networks)

    @property
    def smtp(self) -> SmtpServer | None:
        """The mail server and the From it sends as; None when no SMTP server is configured."""
        if self.smtp_url is None or self.smtp_from is None:
            return None
        server = parse_smtp_url(self.smtp_url.get_secret_value())
        name, address = parse_sender(self.smtp_from)
        return SmtpServer(
            host=server.host,
            port=server.port,
            implicit_tls=server.implicit_tls,
            starttls=server.starttls,
            username=server.username,
            password=server.password,
            sender_name=name,
            sender_address=address,
        )

    @property
    def outbound_proxies(self) -> OutboundProxies:
        """HTTPS_PROXY, HTTP_PROXY and NO_PROXY, parsed (checked at start-up)."""
        https, http = self.https_proxy, self.http_proxy
        return OutboundProxies(
            https=parse_proxy_url(https.get_secret_value(), "HTTPS_PROXY") if https else None,
            http=parse_proxy_url(http.get_secret_value(), "HTTP_PROXY") if http else None,
            no_proxy=parse_no_proxy(self.no_proxy),
        )

    @property
    def secret(self) -> bytes:
        """The pepper for digests and the root of encryption keys; load_settings guarantees it."""
        if self.secret_key is None:
            raise ConfigurationError(
                "SLUICEGATE_SECRET_KEY",
                "is required with a Postgres database, so every replica peppers digests alike; "
                + HOW_TO_GENERATE,
            )
        return self.secret_key.get_secret_value().encode()


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """'10.0.0.0/8, 192.168.1.7, ::1' as networks; ValueError naming the entry that is not one."""
    networks = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def env_name(field: str) -> str:
    return PROXY_VARIABLES.get(field.lower()) or f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise ConfigurationError naming the first bad variable.

    Also settles the secret key: with SQLite and no SLUICEGATE_SECRET_KEY, one is generated once
    and kept beside the database, so `bootstrap` and `serve` agree across restarts. With Postgres
    it must be given; `Settings.secret` says so when first needed (after the database is checked,
    so an unreachable database is reported first).
    """
    return settle_secret(read_settings(**overrides))


def read_settings(**overrides: Any) -> Settings:
    """Settings from the environment, without settling the secret key (see `load_settings`);
    raise ConfigurationError naming the first bad variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "settings"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append((env_name(field), message))
        (first_name, first_problem), rest = problems[0], problems[1:]
        problem = "; ".join([first_problem, *(f"{name}: {message}" for name, message in rest)])
        raise ConfigurationError(first_name, problem) from None
    return settings


def settle_secret(settings: Settings) -> Settings:
    """With SQLite and no SLUICEGATE_SECRET_KEY: the key kept beside the database, generated
    there the first time."""
    if settings.secret_key is None and settings.is_sqlite:
        settings = settings.model_copy(update={"secret_key": SecretStr(_stored_secret(settings))})
    return settings


def _stored_secret(settings: Settings) -> str:
    path = secret_file_for(settings)
    if path.exists():
        value = path.read_text().strip()
        if len(value) < MIN_SECRET_KEY_LENGTH:
            raise ConfigurationError(
                "SLUICEGATE_SECRET_KEY", f"the stored key in {path} is too short; restore it"
            )
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    # Write aside, then link into place: link fails if the file exists, so two processes
    # starting at once agree on one key and nobody ever reads a half-written file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        temporary.unlink()
    return value


def secret_file_for(settings: Settings) -> Path:
    """The generated secret lives beside the SQLite file: sluicegate.db -> sluicegate.secret."""
    database = settings.resolved_database_url.split(":///", 1)[1]
    return Path(database).with_suffix(".secret")


def load_provider_settings(settings: Settings) -> ProviderSettings:
    """The providers file named by SLUICEGATE_PROVIDERS, with `api_key_env` read from the
    environment; ConfigurationError (one line) when anything in it is wrong."""
    from sluicegate.providers.config import load_providers

    return load_providers(settings.providers, os.environ)
