"""The built-in model catalog: list prices and limits of known models, read from catalog.yaml."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sluicegate.core.money import MoneyError, cost_nanos, usd_to_nanos

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")

Mode = Literal["chat", "embedding"]


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices in nano-USD per 1M tokens: fresh input, output, and input served from a cache."""

    input_nusd_per_mtok: int
    output_nusd_per_mtok: int
    cached_input_nusd_per_mtok: int

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """Nano-USD for a request: uncached prompt at input price, cached at the cached price,
        completion at the output price; each part rounded through core.money.cost_nanos."""
        # Counts come from upstream usage blocks: a negative count or more cached than prompt
        # tokens is an upstream bug, and must never turn into a credit.
        prompt = max(prompt_tokens, 0)
        cached = min(max(cached_tokens, 0), prompt)
        completion = max(completion_tokens, 0)
        # Priced as "whole prompt minus the cache discount" rather than "uncached + cached", so
        # that per-part rounding can never make a cache hit cost more than a miss.
        discount = cost_nanos(cached, self.input_nusd_per_mtok) - cost_nanos(
            cached, self.cached_input_nusd_per_mtok
        )
        return (
            cost_nanos(prompt, self.input_nusd_per_mtok)
            - discount
            + cost_nanos(completion, self.output_nusd_per_mtok)
        )


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One known model: its canonical id, family, mode, price and limits."""

    id: str
    provider: str
    mode: str
    price: ModelPrice
    context_window: int
    max_output_tokens: int
    aliases: tuple[str, ...]


def parse_price(value: object) -> int:
    """A USD-per-1M-tokens price from YAML (string or number) as exact nano-USD; never negative."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a price; write USD per 1M tokens, like '0.15'")
    try:
        nanos = usd_to_nanos(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None
    if nanos < 0:
        raise ValueError(f"{value!r} is negative; a price must be 0 or more")
    return nanos


def first_problem(error: ValidationError, model: type[BaseModel]) -> str:
    """The first problem of a pydantic error as one line a person can act on, naming the field."""
    detail = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in detail["loc"])
    kind = detail["type"]
    if kind == "extra_forbidden":
        allowed = sorted(model.model_fields)
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
        return f"unknown field '{field}' ({hint})"
    if kind == "missing":
        return f"'{field}' is required"
    message = str(detail["msg"]).removeprefix("Value error, ")
    return f"'{field}': {message}" if field else message


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML syntax error as one line: where it is and what is wrong."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).replace("\n", " ")
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


class _Entry(BaseModel):
    """One entry of catalog.yaml, as written; prices are converted to nano-USD on the way in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    mode: Mode
    input_usd_per_mtok: int
    output_usd_per_mtok: int
    cached_input_usd_per_mtok: int
    context_window: int = Field(gt=0, strict=True)
    max_output_tokens: int = Field(ge=0, strict=True)
    aliases: tuple[str, ...] = ()

    @field_validator(
        "input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok", mode="before"
    )
    @classmethod
    def _price(cls, value: object) -> int:
        return parse_price(value)

    @model_validator(mode="after")
    def _consistent(self) -> _Entry:
        if self.mode == "chat" and self.max_output_tokens == 0:
            raise ValueError("max_output_tokens must be above 0 for a chat model")
        if self.cached_input_usd_per_mtok > self.input_usd_per_mtok:
            raise ValueError(
                "cached_input_usd_per_mtok is above input_usd_per_mtok; "
                "a cache hit is never dearer than a miss"
            )
        return self


def load_catalog(path: Path | None = None) -> dict[str, CatalogModel]:
    """Read and validate a catalog file; the result is keyed by id AND by every alias.

    A bad entry raises ValueError naming the entry (by index and id) and the field.
    """
    source = path or CATALOG_PATH
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: invalid YAML: {yaml_problem(exc)}") from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{source}: expected a top-level 'models:' list")
    catalog: dict[str, CatalogModel] = {}
    for index, raw in enumerate(entries):
        model = _to_model(_parse_entry(source, index, raw))
        for name in (model.id, *model.aliases):
            if name in catalog:
                raise ValueError(
                    f"{source}: models[{index}] '{model.id}': '{name}' is already the id or an "
                    f"alias of '{catalog[name].id}'; ids and aliases must be unique"
                )
            catalog[name] = model
    return catalog


@functools.lru_cache(maxsize=1)
def default_catalog() -> Mapping[str, CatalogModel]:
    """The shipped catalog, read once per process; read-only because every caller shares it."""
    return MappingProxyType(load_catalog())


def _parse_entry(source: Path, index: int, raw: Any) -> _Entry:
    label = f"models[{index}]"
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        label += f" '{raw['id']}'"
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: {label}: expected a mapping of fields")
    try:
        return _Entry.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{source}: {label}: {first_problem(exc, _Entry)}") from None


def _to_model(entry: _Entry) -> CatalogModel:
    return CatalogModel(
        id=entry.id,
        provider=entry.provider,
        mode=entry.mode,
        price=ModelPrice(
            input_nusd_per_mtok=entry.input_usd_per_mtok,
            output_nusd_per_mtok=entry.output_usd_per_mtok,
            cached_input_nusd_per_mtok=entry.cached_input_usd_per_mtok,
        ),
        context_window=entry.context_window,
        max_output_tokens=entry.max_output_tokens,
        aliases=entry.aliases,
    )
