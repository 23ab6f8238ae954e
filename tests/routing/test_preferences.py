"""A request's own routing preferences: `models` and `provider` are read, checked field by field,
and taken out of the body before it goes upstream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.money import NANOS_PER_USD, nanos_to_usd
from sluicegate.providers.model_entries import MAX_FALLBACKS
from sluicegate.routing.preferences import (
    MAX_PROVIDER_NAMES,
    NO_PREFERENCES,
    BadPreference,
    Preferences,
    take_preferences,
)

# The highest max_price the gateway accepts: a million USD per million tokens, in nano-USD.
TOP_PRICE_NANOS = 1_000_000 * NANOS_PER_USD


def read_provider(**fields: object) -> Preferences:
    return take_preferences({"model": "gpt-4o", "provider": fields})


def refusal(body: dict[str, Any]) -> BadPreference:
    with pytest.raises(BadPreference) as caught:
        take_preferences(body)
    return caught.value


# --- each field read ----------------------------------------------------------------------


def test_a_body_without_routing_fields_has_no_preferences() -> None:
    preferences = take_preferences({"model": "gpt-4o", "messages": []})
    assert preferences is NO_PREFERENCES
    assert preferences.empty


def test_models_are_read_in_order_without_repeats() -> None:
    preferences = take_preferences({"models": ["gpt-4o", "claude", "gpt-4o", "mistral"]})
    assert preferences.models == ("gpt-4o", "claude", "mistral")
    assert not preferences.empty


def test_models_alone_leave_every_provider_field_at_its_default() -> None:
    preferences = take_preferences({"models": ["claude"]})
    assert preferences == Preferences(models=("claude",))


def test_provider_order_only_and_ignore_are_read_in_order_without_repeats() -> None:
    preferences = read_provider(order=["b", "a", "b"], only=["a", "b"], ignore=["c"])
    assert preferences.order == ("b", "a")
    assert preferences.only == ("a", "b")
    assert preferences.ignore == ("c",)


def test_allow_fallbacks_is_true_unless_the_request_says_false() -> None:
    assert read_provider().allow_fallbacks is True
    assert read_provider(allow_fallbacks=None).allow_fallbacks is True
    assert read_provider(allow_fallbacks=True).allow_fallbacks is True
    assert read_provider(allow_fallbacks=False).allow_fallbacks is False


def test_data_collection_deny_requires_no_training_and_no_prompt_logging() -> None:
    assert read_provider(data_collection="deny").requires == {"no_training", "no_prompt_logging"}


def test_data_collection_allow_requires_nothing() -> None:
    assert read_provider(data_collection="allow").requires == frozenset()


def test_zdr_true_requires_zero_data_retention() -> None:
    assert read_provider(zdr=True).requires == {"zdr"}
    assert read_provider(zdr=False).requires == frozenset()


def test_zdr_and_data_collection_deny_add_up() -> None:
    preferences = read_provider(zdr=True, data_collection="deny")
    assert preferences.requires == {"zdr", "no_training", "no_prompt_logging"}


def test_require_parameters_is_accepted_either_way() -> None:
    assert read_provider(require_parameters=True) == Preferences()
    assert read_provider(require_parameters=False) == Preferences()


def test_max_price_is_read_as_nano_usd_per_million_tokens() -> None:
    preferences = read_provider(max_price={"prompt": "0.15", "completion": 0.6})
    assert preferences.max_input_price == 150_000_000
    assert preferences.max_output_price == 600_000_000


def test_max_price_may_give_one_part_only() -> None:
    preferences = read_provider(max_price={"completion": 3})
    assert (preferences.max_input_price, preferences.max_output_price) == (None, 3 * NANOS_PER_USD)


@pytest.mark.parametrize("sort", ["price", "latency", "throughput"])
def test_sort_is_read(sort: str) -> None:
    assert read_provider(sort=sort).sort == sort


def test_unknown_provider_fields_are_ignored() -> None:
    preferences = read_provider(
        quantizations=["fp8"], experimental={"anything": [1, 2]}, sort="price", preferred=None
    )
    assert preferences == Preferences(sort="price")


# --- each bad value refused, naming its field ---------------------------------------------

TOO_MANY_MODELS = [f"m{i}" for i in range(MAX_FALLBACKS + 2)]
TOO_MANY_PROVIDERS = [f"p{i}" for i in range(MAX_PROVIDER_NAMES + 1)]

BAD_VALUES = [
    ({"models": "gpt-4o"}, "models"),
    ({"models": [""]}, "models"),
    ({"models": ["gpt-4o", 7]}, "models"),
    ({"models": TOO_MANY_MODELS}, "models"),
    ({"provider": "openai"}, "provider"),
    ({"provider": ["openai"]}, "provider"),
    ({"provider": {"order": "openai"}}, "provider.order"),
    ({"provider": {"order": [None]}}, "provider.order"),
    ({"provider": {"order": TOO_MANY_PROVIDERS}}, "provider.order"),
    ({"provider": {"only": [""]}}, "provider.only"),
    ({"provider": {"only": TOO_MANY_PROVIDERS}}, "provider.only"),
    ({"provider": {"ignore": {"openai": True}}}, "provider.ignore"),
    ({"provider": {"allow_fallbacks": "false"}}, "provider.allow_fallbacks"),
    ({"provider": {"allow_fallbacks": 0}}, "provider.allow_fallbacks"),
    ({"provider": {"zdr": 1}}, "provider.zdr"),
    ({"provider": {"zdr": "true"}}, "provider.zdr"),
    ({"provider": {"require_parameters": "yes"}}, "provider.require_parameters"),
    ({"provider": {"data_collection": "maybe"}}, "provider.data_collection"),
    ({"provider": {"data_collection": True}}, "provider.data_collection"),
    ({"provider": {"max_price": 5}}, "provider.max_price"),
    ({"provider": {"max_price": ["1"]}}, "provider.max_price"),
    ({"provider": {"max_price": {"prompt": -1}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": "cheap"}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": True}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": ["1"]}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": "NaN"}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": float("inf")}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"prompt": "1000000.000000001"}}}, "provider.max_price.prompt"),
    ({"provider": {"max_price": {"completion": "-0.5"}}}, "provider.max_price.completion"),
    ({"provider": {"max_price": {"completion": "Infinity"}}}, "provider.max_price.completion"),
    ({"provider": {"sort": "cheapest"}}, "provider.sort"),
    ({"provider": {"sort": 1}}, "provider.sort"),
]


@pytest.mark.parametrize(("body", "field"), BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_a_bad_value_is_refused_naming_its_field(body: dict[str, Any], field: str) -> None:
    error = refusal(body)
    assert error.field == field
    assert str(error).startswith(f"'{field}' ")


def test_models_may_name_the_fallback_limit_and_the_asked_model() -> None:
    models = [f"m{i}" for i in range(MAX_FALLBACKS + 1)]
    assert take_preferences({"models": models}).models == tuple(models)


def test_a_provider_list_may_name_the_limit() -> None:
    names = [f"p{i}" for i in range(MAX_PROVIDER_NAMES)]
    assert read_provider(order=names).order == tuple(names)


# --- the body after ---------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@given(
    rest=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5),
    models=st.none() | st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
    provider=st.none() | st.fixed_dictionaries({}, optional={"sort": st.sampled_from(["price"])}),
)
def test_the_body_no_longer_has_models_or_provider_and_keeps_the_rest(
    rest: dict[str, Any], models: list[str] | None, provider: dict[str, Any] | None
) -> None:
    rest = {k: v for k, v in rest.items() if k not in ("models", "provider")}
    body = {**rest, "models": models, "provider": provider}
    take_preferences(body)
    assert body == rest


def test_a_refused_body_has_lost_its_routing_fields_too() -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "provider": {"sort": "fastest"}, "models": ["x"]}
    refusal(body)
    assert body == {"model": "gpt-4o"}


# --- max_price exactness ------------------------------------------------------------------


@given(st.integers(0, TOP_PRICE_NANOS), st.booleans())
def test_max_price_with_up_to_nine_places_is_exact(nanos: int, trimmed: bool) -> None:
    text = nanos_to_usd(nanos)  # nine places: "0.150000000"
    if trimmed:
        text = text.rstrip("0").rstrip(".") or "0"  # as people write it: "0.15"
    preferences = read_provider(max_price={"prompt": text, "completion": text})
    assert preferences.max_input_price == preferences.max_output_price == nanos


# A double keeps every decimal of up to 15 significant digits.
@given(st.integers(0, 10**14))
def test_max_price_sent_as_a_json_number_is_exact(nanos: int) -> None:
    number = float(Decimal(nanos) / NANOS_PER_USD)
    assert read_provider(max_price={"prompt": number}).max_input_price == nanos


@given(st.integers(0, TOP_PRICE_NANOS - 1), st.integers(1, 9), st.integers(1, 9))
def test_max_price_finer_than_a_nano_usd_is_rounded_down(
    nanos: int, digits: int, last: int
) -> None:
    text = nanos_to_usd(nanos) + "0" * (digits - 1) + str(last)  # a few places past the nano
    assert read_provider(max_price={"prompt": text}).max_input_price == nanos


@given(st.integers(0, 1_000_000))
def test_max_price_in_whole_dollars_is_exact(usd: int) -> None:
    preferences = read_provider(max_price={"prompt": usd, "completion": str(usd)})
    assert preferences.max_input_price == preferences.max_output_price == usd * NANOS_PER_USD
