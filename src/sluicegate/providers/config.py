"""The SLUICEGATE_PROVIDERS file: upstream providers and the models served, each with its price.

Read once at start-up. Any problem stops start-up with one line naming the entry and the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.catalog import CatalogModel, default_catalog, first_problem, yaml_problem
from sluicegate.providers.deployment import (
    DataPolicy,
    ModelRoute,
    ProviderConfig,
    ServedModel,
)
from sluicegate.providers.model_entries import ModelEntry, check_fallbacks, resolve_model

# The resolved shapes are defined beside the routing they serve; they are read from here too.
__all__ = ["ModelRoute", "ProviderConfig", "ProviderSettings", "ServedModel", "load_providers"]

SETTING = "SLUICEGATE_PROVIDERS"
PROVIDER_TYPES = ("openai", "anthropic", "azure")
DEFAULT_AZURE_API_VERSION = "2024-10-21"  # the GA data-plane version current when written
DEFAULT_MAX_CONNECTIONS = 512

_EntryT = TypeVar("_EntryT", bound=BaseModel)

# RFC 9110 token characters; a value may not contain CR/LF, which would split the header.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class ProviderSettings:
    """Everything the providers file configures: providers by name, routes by id in file order."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ServedModel]

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
    models: dict[str, ServedModel] = {}
    for index, raw in enumerate(document.models):
        label = _label("models", index, raw, "id")
        wanted = _validate(path, label, ModelEntry, raw)
        if wanted.id in models:
            raise _fail(path, f"{label}: duplicate id; model ids must be unique")
        try:
            models[wanted.id] = resolve_model(wanted, providers, known)
        except ValueError as exc:
            raise _fail(path, f"{label}: {exc}") from None
    wrong = check_fallbacks(models)
    if wrong is not None:
        model_id, problem = wrong
        index = list(models).index(model_id)
        raise _fail(path, f"models[{index}] '{model_id}': {problem}")
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
    # What the provider promises about the data it is sent (routing's compliance filter).
    zdr: bool = Field(default=False, strict=True)
    no_training: bool = Field(default=False, strict=True)
    no_prompt_logging: bool = Field(default=False, strict=True)
    certifications: list[Literal["soc2", "iso27001", "gdpr", "hipaa"]] = []
    region: str | None = Field(default=None, min_length=1, max_length=32)

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
        policy=DataPolicy(
            zdr=entry.zdr,
            no_training=entry.no_training,
            no_prompt_logging=entry.no_prompt_logging,
            certifications=frozenset(entry.certifications),
            region=entry.region,
        ),
    )


def _fail(path: Path, problem: str) -> ConfigurationError:
    # One line always: the CLI prints it as `sluicegate: SLUICEGATE_PROVIDERS: ...`.
    return ConfigurationError(SETTING, f"{path}: {problem}".replace("\n", " "))
