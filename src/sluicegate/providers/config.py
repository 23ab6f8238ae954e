"""The SLUICEGATE_PROVIDERS file: upstream providers and the models served, each with its price.

Read once at start-up. Any problem stops start-up with one line naming the entry and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.catalog import (
    CatalogModel,
    ModelPrice,
    default_catalog,
    first_problem,
    parse_price,
    yaml_problem,
)

SETTING = "SLUICEGATE_PROVIDERS"
PROVIDER_TYPES = ("openai", "anthropic", "azure")
DEFAULT_AZURE_API_VERSION = "2024-10-21"  # the GA data-plane version current when written
DEFAULT_MAX_CONNECTIONS = 512
# Limits for a model that neither its entry nor the catalog sizes: 128k is the common context of
# current chat models, and 4096 output tokens is accepted by nearly all of them, so a budget
# reservation sized from these is bounded without refusing ordinary requests.
DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 4_096

_EntryT = TypeVar("_EntryT", bound=BaseModel)

# RFC 9110 token characters; a value may not contain CR/LF, which would split the header.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One upstream endpoint and how to authenticate to it. Secrets stay out of repr."""

    name: str
    type: str
    base_url: str
    api_key: str | None = field(repr=False)
    api_version: str | None
    # Extra upstream headers often carry credentials too (api-key, x-goog-api-key).
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    max_connections: int
    timeout_seconds: float | None


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A model clients may ask for: where it goes, the upstream name, its mode, price and limits."""

    id: str
    provider: ProviderConfig
    upstream_model: str
    mode: str
    price: ModelPrice
    context_window: int
    max_output_tokens: int
    catalog_id: str | None


@dataclass(frozen=True)
class ProviderSettings:
    """Everything the providers file configures: providers by name, routes by id in file order."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelRoute]

    @classmethod
    def empty(cls) -> ProviderSettings:
        """No providers file: nothing is served."""
        return cls(providers={}, models={})


def load_providers(
    path: Path | None,
    environ: Mapping[str, str],
    catalog: Mapping[str, CatalogModel] | None = None,
) -> ProviderSettings:
    """Read, validate and resolve the providers file; raise ConfigurationError on any problem."""
    if path is None:
        return ProviderSettings.empty()
    known = default_catalog() if catalog is None else catalog
    document = _read(path)
    providers: dict[str, ProviderConfig] = {}
    for index, raw in enumerate(document.providers):
        label = _label("providers", index, raw, "name")
        entry = _validate(path, label, _ProviderEntry, raw)
        if entry.name in providers:
            raise _fail(path, f"{label}: duplicate name; provider names must be unique")
        providers[entry.name] = _provider(path, label, entry, environ)
    models: dict[str, ModelRoute] = {}
    for index, raw in enumerate(document.models):
        label = _label("models", index, raw, "id")
        wanted = _validate(path, label, _ModelEntry, raw)
        if wanted.id in models:
            raise _fail(path, f"{label}: duplicate id; model ids must be unique")
        provider = providers.get(wanted.provider)
        if provider is None:
            listed = ", ".join(providers) or "none"
            raise _fail(
                path,
                f"{label}: 'provider': '{wanted.provider}' is not a listed provider "
                f"(listed: {listed})",
            )
        try:
            models[wanted.id] = _route(wanted, provider, known)
        except ValueError as exc:
            raise _fail(path, f"{label}: {exc}") from None
    return ProviderSettings(providers=providers, models=models)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Any] = []
    models: list[Any] = []

    @field_validator("providers", "models", mode="before")
    @classmethod
    def _blank_is_empty(cls, value: object) -> object:
        # `models:` with nothing under it parses as null; it means "no entries yet".
        return [] if value is None else value


class _ProviderEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: Literal["openai", "anthropic", "azure"]
    base_url: str
    api_key: str | None = Field(default=None, min_length=1)
    api_key_env: str | None = Field(default=None, min_length=1)
    api_version: str | None = Field(default=None, min_length=1)
    headers: dict[str, str] = {}
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, strict=True)
    timeout_seconds: float | None = Field(default=None, gt=0, strict=True)

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_as_written(cls, value: object) -> object:
        # YAML reads an unquoted 2024-10-21 as a date; the operator meant the string.
        return value.isoformat() if isinstance(value, date) else value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # The URL is not echoed: it may carry credentials in its user-info part.
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment; request paths are appended to it")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"the value of {name!r} contains a line break")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> _ProviderEntry:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key_env or api_key, not both")
        return self


class _ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    upstream_model: str | None = Field(default=None, min_length=1)
    mode: Literal["chat", "embedding"] | None = None
    # Held in nano-USD once validated, despite the names, which are the ones operators write.
    input_usd_per_mtok: int | None = None
    output_usd_per_mtok: int | None = None
    cached_input_usd_per_mtok: int | None = None
    context_window: int | None = Field(default=None, gt=0, strict=True)
    max_output_tokens: int | None = Field(default=None, ge=0, strict=True)

    @field_validator(
        "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok", mode="before"
    )
    @classmethod
    def _price(cls, value: object) -> int | None:
        return None if value is None else parse_price(value)


def _read(path: Path) -> _File:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise _fail(path, f"cannot read the file ({reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(path, f"invalid YAML: {yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping with 'providers:' and 'models:' lists")
    try:
        return _File.model_validate(data)
    except ValidationError as exc:
        raise _fail(path, first_problem(exc, _File)) from None


def _label(section: str, index: int, raw: object, key: str) -> str:
    name = raw.get(key) if isinstance(raw, dict) else None
    return f"{section}[{index}] '{name}'" if isinstance(name, str) else f"{section}[{index}]"


def _validate(path: Path, label: str, model: type[_EntryT], raw: object) -> _EntryT:
    if not isinstance(raw, dict):
        raise _fail(path, f"{label}: expected a mapping of fields")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise _fail(path, f"{label}: {first_problem(exc, model)}") from None


def _provider(
    path: Path, label: str, entry: _ProviderEntry, environ: Mapping[str, str]
) -> ProviderConfig:
    api_key = entry.api_key
    if entry.api_key_env is not None:
        api_key = environ.get(entry.api_key_env)
        if not api_key:
            state = "is empty" if api_key == "" else "is not set"
            raise _fail(
                path,
                f"{label}: 'api_key_env': environment variable {entry.api_key_env} {state}; "
                "set it to the provider's API key",
            )
    api_version = entry.api_version
    if entry.type == "azure" and api_version is None:
        api_version = DEFAULT_AZURE_API_VERSION
    return ProviderConfig(
        name=entry.name,
        type=entry.type,
        base_url=entry.base_url,
        api_key=api_key,
        api_version=api_version,
        headers=tuple(entry.headers.items()),
        max_connections=entry.max_connections,
        timeout_seconds=entry.timeout_seconds,
    )


def _route(
    entry: _ModelEntry, provider: ProviderConfig, catalog: Mapping[str, CatalogModel]
) -> ModelRoute:
    """Resolve one model entry: explicit fields first, then the catalog, then defaults."""
    upstream = entry.upstream_model or entry.id
    known = catalog.get(upstream) or catalog.get(entry.id)
    unknown = f"'{upstream}' is not in the built-in catalog"
    if known is not None and entry.mode is not None and known.mode != entry.mode:
        # Same name, different kind of model: the catalog entry does not describe this one.
        unknown = f"the built-in catalog's '{known.id}' is a {known.mode} model, not {entry.mode}"
        known = None
    mode = entry.mode or (known.mode if known else None)
    if mode is None and entry.output_usd_per_mtok is not None:
        mode = "chat"  # priced for output: a model that writes (an Azure deployment, say)
    if mode is None:
        missing = "mode (chat or embedding)"
        if entry.input_usd_per_mtok is None:
            missing += ", input_usd_per_mtok, output_usd_per_mtok"
        raise ValueError(f"{unknown}; add {missing}")
    price = _price(entry, mode, known, unknown)
    if entry.context_window is not None:
        context_window = entry.context_window
    else:
        context_window = known.context_window if known else DEFAULT_CONTEXT_WINDOW
    if entry.max_output_tokens is not None:
        max_output_tokens = entry.max_output_tokens
    elif known is not None:
        max_output_tokens = known.max_output_tokens
    else:
        max_output_tokens = DEFAULT_MAX_OUTPUT_TOKENS if mode == "chat" else 0
    if mode == "chat" and max_output_tokens == 0:
        raise ValueError("'max_output_tokens' must be above 0 for a chat model")
    return ModelRoute(
        id=entry.id,
        provider=provider,
        upstream_model=upstream,
        mode=mode,
        price=price,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        catalog_id=known.id if known else None,
    )


def _price(entry: _ModelEntry, mode: str, known: CatalogModel | None, unknown: str) -> ModelPrice:
    """The entry's own price when it gives one (complete), else the catalog's."""
    given_input, given_output = entry.input_usd_per_mtok, entry.output_usd_per_mtok
    given_cached = entry.cached_input_usd_per_mtok
    if given_input is None and (given_output is not None or given_cached is not None):
        raise ValueError(
            "'input_usd_per_mtok' is required when another price is given; "
            "give the whole price, or none to use the built-in catalog"
        )
    if given_input is None:
        if known is not None:
            return known.price
        needed = "input_usd_per_mtok"
        if mode == "chat":
            needed += " and output_usd_per_mtok"
        raise ValueError(f"{unknown}, and the entry has no price; add {needed}")
    if given_output is None and mode == "chat":
        raise ValueError("'output_usd_per_mtok' is required with input_usd_per_mtok for chat")
    cached = given_input if given_cached is None else given_cached
    if cached > given_input:
        raise ValueError(
            "'cached_input_usd_per_mtok' is above input_usd_per_mtok; "
            "a cache hit is never dearer than a miss"
        )
    return ModelPrice(
        input_nusd_per_mtok=given_input,
        output_nusd_per_mtok=given_output or 0,
        cached_input_nusd_per_mtok=cached,
    )


def _fail(path: Path, problem: str) -> ConfigurationError:
    # One line always: the CLI prints it as `sluicegate: SLUICEGATE_PROVIDERS: ...`.
    return ConfigurationError(SETTING, f"{path}: {problem}".replace("\n", " "))
