"""The `models:` entries of the providers file: one model id, served by one deployment (the
`provider:` shorthand) or several (`deployments:`), each resolved against the built-in catalog.

Fields written on the model (upstream_model, prices, limits) are the defaults of each of its
deployments; a deployment's own fields win."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sluicegate.providers.catalog import CatalogModel, ModelPrice, parse_price
from sluicegate.providers.deployment import ModelRoute, ProviderConfig, ServedModel

# Limits for a model that neither its entry nor the catalog sizes: 128k is the common context of
# current chat models, and 4096 output tokens is accepted by nearly all of them, so a budget
# reservation sized from these is bounded without refusing ordinary requests.
DEFAULT_CONTEXT_WINDOW = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
# Enough for every real setup (regions x providers); a bound keeps routing per request cheap.
MAX_DEPLOYMENTS = 32
MAX_FALLBACKS = 8
_PRICES = ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok")


class _Priced(BaseModel):
    """The fields a model and each of its deployments may both carry."""

    model_config = ConfigDict(extra="forbid")

    upstream_model: str | None = Field(default=None, min_length=1)
    # Held in nano-USD once validated, despite the names, which are the ones operators write.
    input_usd_per_mtok: int | None = None
    output_usd_per_mtok: int | None = None
    cached_input_usd_per_mtok: int | None = None
    context_window: int | None = Field(default=None, gt=0, strict=True)
    max_output_tokens: int | None = Field(default=None, ge=0, strict=True)

    @field_validator(*_PRICES, mode="before")
    @classmethod
    def _price(cls, value: object) -> int | None:
        return None if value is None else parse_price(value)


class DeploymentEntry(_Priced):
    provider: str = Field(min_length=1)
    name: str | None = Field(default=None, min_length=1, max_length=200)
    region: str | None = Field(default=None, min_length=1, max_length=32)
    priority: int = Field(default=0, ge=0, le=1000, strict=True)
    weight: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    rpm: int | None = Field(default=None, ge=1, strict=True)
    tpm: int | None = Field(default=None, ge=1, strict=True)
    tags: list[str] = Field(default=[], max_length=16)


class ModelEntry(_Priced):
    id: str = Field(min_length=1, max_length=200)
    provider: str | None = Field(default=None, min_length=1)
    deployments: list[DeploymentEntry] | None = Field(
        default=None, min_length=1, max_length=MAX_DEPLOYMENTS
    )
    mode: Literal["chat", "embedding"] | None = None
    strategy: Literal["priority", "weighted", "least_busy", "lowest_latency"] = "priority"
    fallbacks: list[str] = Field(default=[], max_length=MAX_FALLBACKS)
    context_window_fallbacks: list[str] = Field(default=[], max_length=MAX_FALLBACKS)

    @model_validator(mode="after")
    def _one_way_to_serve(self) -> ModelEntry:
        if (self.provider is None) == (self.deployments is None):
            raise ValueError("give 'provider' (one deployment) or 'deployments' (a list), not both")
        return self

    def deployment_entries(self) -> list[DeploymentEntry]:
        if self.deployments is not None:
            return self.deployments
        assert self.provider is not None
        return [DeploymentEntry(provider=self.provider)]


def resolve_model(
    entry: ModelEntry, providers: Mapping[str, ProviderConfig], catalog: Mapping[str, CatalogModel]
) -> ServedModel:
    """The served model of one entry; ValueError names the problem (and the deployment)."""
    routes: list[ModelRoute] = []
    names: set[str] = set()
    multiple = entry.deployments is not None
    for index, wanted in enumerate(entry.deployment_entries()):
        where = f"deployments[{index}]: " if multiple else ""
        provider = providers.get(wanted.provider)
        if provider is None:
            listed = ", ".join(providers) or "none"
            raise ValueError(
                f"{where}'provider': '{wanted.provider}' is not a listed provider "
                f"(listed: {listed})"
            )
        try:
            route = _route(entry, wanted, provider, catalog)
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None
        if route.deployment in names:
            raise ValueError(
                f"{where}a second deployment named '{route.deployment}'; give each a distinct "
                "'name' (e.g. the region)"
            )
        names.add(route.deployment)
        if routes and route.mode != routes[0].mode:
            raise ValueError(
                f"{where}a {route.mode} deployment of a {routes[0].mode} model; every deployment "
                "of a model id must be of the same mode"
            )
        routes.append(route)
    return ServedModel(
        id=entry.id,
        mode=routes[0].mode,
        deployments=tuple(routes),
        strategy=entry.strategy,
        fallbacks=tuple(entry.fallbacks),
        context_window_fallbacks=tuple(entry.context_window_fallbacks),
    )


def check_fallbacks(models: Mapping[str, ServedModel]) -> tuple[str, str] | None:
    """(model id, problem) for the first fallback naming no model of the same mode, else None."""
    for served in models.values():
        for field in ("fallbacks", "context_window_fallbacks"):
            for target in getattr(served, field):
                other = models.get(target)
                if target == served.id:
                    return served.id, f"'{field}': a model cannot fall back to itself"
                if other is None:
                    return served.id, f"'{field}': '{target}' is not a model id of this file"
                if other.mode != served.mode:
                    return served.id, (
                        f"'{field}': '{target}' is a {other.mode} model, not {served.mode}"
                    )
    return None


def _merged(entry: ModelEntry, wanted: DeploymentEntry) -> dict[str, Any]:
    """The deployment's priced fields, each from the deployment when it gives it, else the
    model. A price is taken whole from one place: mixing halves would be a price no one set."""
    own_price = any(getattr(wanted, name) is not None for name in _PRICES)
    source: _Priced = wanted if own_price else entry
    merged = {name: getattr(source, name) for name in _PRICES}
    for name in ("upstream_model", "context_window", "max_output_tokens"):
        value = getattr(wanted, name)
        merged[name] = getattr(entry, name) if value is None else value
    return merged


def _route(
    entry: ModelEntry,
    wanted: DeploymentEntry,
    provider: ProviderConfig,
    catalog: Mapping[str, CatalogModel],
) -> ModelRoute:
    """Resolve one deployment: explicit fields first, then the catalog, then defaults."""
    fields = _merged(entry, wanted)
    upstream = fields["upstream_model"] or entry.id
    known = catalog.get(upstream) or catalog.get(entry.id)
    unknown = f"'{upstream}' is not in the built-in catalog"
    if known is not None and entry.mode is not None and known.mode != entry.mode:
        # Same name, different kind of model: the catalog entry does not describe this one.
        unknown = f"the built-in catalog's '{known.id}' is a {known.mode} model, not {entry.mode}"
        known = None
    mode = entry.mode or (known.mode if known else None)
    if mode is None and fields["output_usd_per_mtok"] is not None:
        mode = "chat"  # priced for output: a model that writes (an Azure deployment, say)
    if mode is None:
        missing = "mode (chat or embedding)"
        if fields["input_usd_per_mtok"] is None:
            missing += ", input_usd_per_mtok, output_usd_per_mtok"
        raise ValueError(f"{unknown}; add {missing}")
    price = _price(fields, mode, known, unknown)
    context_window = fields["context_window"]
    if context_window is None:
        context_window = known.context_window if known else DEFAULT_CONTEXT_WINDOW
    max_output_tokens = fields["max_output_tokens"]
    if max_output_tokens is None:
        if known is not None:
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
        deployment=wanted.name or f"{provider.name}/{upstream}",
        region=wanted.region or provider.policy.region,
        priority=wanted.priority,
        weight=wanted.weight,
        rpm=wanted.rpm,
        tpm=wanted.tpm,
        tags=tuple(wanted.tags),
    )


def _price(
    fields: Mapping[str, Any], mode: str, known: CatalogModel | None, unknown: str
) -> ModelPrice:
    """The entry's own price when it gives one (complete), else the catalog's."""
    given_input, given_output = fields["input_usd_per_mtok"], fields["output_usd_per_mtok"]
    given_cached = fields["cached_input_usd_per_mtok"]
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
