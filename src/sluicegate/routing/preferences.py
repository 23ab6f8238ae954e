"""A request's own routing preferences, in OpenRouter's shape: a `models` array of fallbacks and a
`provider` object (order, allow_fallbacks, only, ignore, data_collection, zdr,
require_parameters, max_price, sort). Both are taken out of the body before it goes upstream.
Unknown fields inside `provider` are ignored; a bad value is refused naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sluicegate.core.money import NANOS_PER_USD
from sluicegate.providers.model_entries import MAX_FALLBACKS

# A request names at most this many providers in one list; the file has at most as many.
MAX_PROVIDER_NAMES = 32
SORTS = ("price", "latency", "throughput")


class BadPreference(ValueError):
    """A routing field of the request has a value the gateway cannot use: a 400 naming it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'{field}' {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Preferences:
    models: tuple[str, ...] = ()
    order: tuple[str, ...] | None = None
    allow_fallbacks: bool = True
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    # Data policies every provider must keep (zdr, no_training, no_prompt_logging).
    requires: frozenset[str] = frozenset()
    # nano-USD per million tokens; a deployment dearer in either is left out.
    max_input_price: int | None = None
    max_output_price: int | None = None
    sort: str | None = None

    @property
    def empty(self) -> bool:
        return self is NO_PREFERENCES


NO_PREFERENCES = Preferences()


def take_preferences(body: dict[str, Any]) -> Preferences:
    """Remove `models` and `provider` from the body and read them (BadPreference on a bad one)."""
    models_value = body.pop("models", None)
    provider = body.pop("provider", None)
    if models_value is None and provider is None:
        return NO_PREFERENCES
    models = _names(models_value, "models", MAX_FALLBACKS + 1) or ()
    if provider is None:
        return Preferences(models=models)
    if not isinstance(provider, dict):
        raise BadPreference("provider", "must be an object")
    requires: set[str] = set()
    collection = provider.get("data_collection")
    if collection is not None:
        if collection not in ("allow", "deny"):
            raise BadPreference("provider.data_collection", 'must be "allow" or "deny"')
        if collection == "deny":
            requires.update(("no_training", "no_prompt_logging"))
    if _flag(provider, "zdr", default=False):
        requires.add("zdr")
    # The gateway never drops a parameter a deployment cannot take: it skips that deployment.
    # So require_parameters is always in force; it is read to refuse a value that is not a flag.
    _flag(provider, "require_parameters", default=False)
    max_input, max_output = _max_price(provider.get("max_price"))
    sort = provider.get("sort")
    if sort is not None and sort not in SORTS:
        raise BadPreference("provider.sort", f"must be one of {', '.join(SORTS)}")
    return Preferences(
        models=models,
        order=_names(provider.get("order"), "provider.order", MAX_PROVIDER_NAMES),
        allow_fallbacks=_flag(provider, "allow_fallbacks", default=True),
        only=_names(provider.get("only"), "provider.only", MAX_PROVIDER_NAMES),
        ignore=_names(provider.get("ignore"), "provider.ignore", MAX_PROVIDER_NAMES),
        requires=frozenset(requires),
        max_input_price=max_input,
        max_output_price=max_output,
        sort=sort,
    )


def _names(value: object, field: str, most: int) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadPreference(field, "must be an array of non-empty strings")
    if len(value) > most:
        raise BadPreference(field, f"may name at most {most}")
    return tuple(dict.fromkeys(value))


def _flag(provider: dict[str, Any], name: str, *, default: bool) -> bool:
    value = provider.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadPreference(f"provider.{name}", "must be true or false")
    return value


def _max_price(value: object) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise BadPreference("provider.max_price", "must be an object")
    return _usd(value.get("prompt"), "prompt"), _usd(value.get("completion"), "completion")


def _usd(value: object, name: str) -> int | None:
    """USD per million tokens -> nano-USD per million tokens (exact; rounded down)."""
    if value is None:
        return None
    field = f"provider.max_price.{name}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadPreference(field, "must be a number of USD per million tokens")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise BadPreference(field, "must be a number of USD per million tokens") from None
    if not amount.is_finite() or amount < 0 or amount > 1_000_000:
        raise BadPreference(field, "must be between 0 and 1000000 USD per million tokens")
    return int(amount * NANOS_PER_USD)
