from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.money import usd_to_nanos
from sluicegate.providers.catalog import ModelPrice, default_catalog, load_catalog

# Up to $1,000 per 1M tokens, in nano-USD; request sizes up to 10M tokens.
prices = st.integers(min_value=0, max_value=1_000 * 10**9)
tokens = st.integers(min_value=0, max_value=10_000_000)


@st.composite
def model_prices(draw: st.DrawFn) -> ModelPrice:
    input_price = draw(prices)
    cached = draw(st.integers(min_value=0, max_value=input_price))
    return ModelPrice(input_price, draw(prices), cached)


def _unique_models() -> list:
    return list({model.id: model for model in default_catalog().values()}.values())


def test_shipped_catalog_is_broad() -> None:
    models = _unique_models()
    assert len(models) >= 40
    assert len({model.provider for model in models}) >= 6
    assert {model.mode for model in models} == {"chat", "embedding"}


def test_every_chat_model_has_context_and_output_limits() -> None:
    for model in _unique_models():
        assert model.context_window > 0, model.id
        if model.mode == "chat":
            assert model.max_output_tokens > 0, model.id
        else:
            assert model.max_output_tokens == 0, model.id
            assert model.price.output_nusd_per_mtok == 0, model.id


def test_every_cache_price_is_at_most_the_input_price() -> None:
    for model in _unique_models():
        assert model.price.cached_input_nusd_per_mtok <= model.price.input_nusd_per_mtok, model.id


def test_an_alias_resolves_to_the_same_entry() -> None:
    catalog = default_catalog()
    haiku = catalog["claude-3-5-haiku-latest"]
    assert haiku is catalog["claude-3-5-haiku-20241022"]
    assert haiku.id == "claude-3-5-haiku-20241022"
    assert "claude-3-5-haiku-latest" in haiku.aliases


def test_prices_are_exact_nanos() -> None:
    catalog = default_catalog()
    mini = catalog["gpt-4o-mini"].price
    assert mini.input_nusd_per_mtok == 150_000_000
    assert mini.output_nusd_per_mtok == 600_000_000
    assert mini.cached_input_nusd_per_mtok == 75_000_000
    # A price that a float would not hold exactly.
    assert catalog["command-r7b-12-2024"].price.input_nusd_per_mtok == usd_to_nanos("0.0375")


def test_default_catalog_is_loaded_once_and_read_only() -> None:
    assert default_catalog() is default_catalog()
    with pytest.raises(TypeError):
        default_catalog()["new-model"] = default_catalog()["gpt-4o"]  # type: ignore[index]


def test_cost_of_a_request() -> None:
    price = default_catalog()["gpt-4o-mini"].price
    # 1000 fresh prompt tokens at 150 nano + 1000 cached at 75 nano + 500 output at 600 nano.
    assert price.cost_nanos(2000, 500, cached_tokens=1000) == 150_000 + 75_000 + 300_000


def test_more_cached_than_prompt_tokens_is_capped_at_the_prompt() -> None:
    price = ModelPrice(1_000_000_000, 2_000_000_000, 100_000_000)
    assert price.cost_nanos(10, 0, cached_tokens=50) == price.cost_nanos(10, 0, cached_tokens=10)


@given(model_prices(), tokens, tokens, tokens)
def test_cost_is_never_negative(
    price: ModelPrice, prompt: int, completion: int, cached: int
) -> None:
    assert price.cost_nanos(prompt, completion, cached) >= 0


@given(model_prices(), tokens, tokens, tokens, tokens, st.data())
def test_cost_is_additive_up_to_rounding(
    price: ModelPrice, p1: int, p2: int, c1: int, c2: int, data: st.DataObject
) -> None:
    k1 = data.draw(st.integers(min_value=0, max_value=p1))
    k2 = data.draw(st.integers(min_value=0, max_value=p2))
    whole = price.cost_nanos(p1 + p2, c1 + c2, k1 + k2)
    parts = price.cost_nanos(p1, c1, k1) + price.cost_nanos(p2, c2, k2)
    # Four roundings of at most half a nano-USD each, on each side.
    assert abs(whole - parts) <= 4


@given(model_prices(), tokens, tokens, st.data())
def test_cached_tokens_never_cost_more_than_uncached(
    price: ModelPrice, prompt: int, completion: int, data: st.DataObject
) -> None:
    cached = data.draw(st.integers(min_value=0, max_value=prompt))
    assert price.cost_nanos(prompt, completion, cached) <= price.cost_nanos(prompt, completion)


@given(model_prices(), tokens, tokens)
def test_cost_grows_with_tokens(price: ModelPrice, prompt: int, completion: int) -> None:
    assert price.cost_nanos(prompt + 1, completion) >= price.cost_nanos(prompt, completion)
    assert price.cost_nanos(prompt, completion + 1) >= price.cost_nanos(prompt, completion)


ENTRY = """\
  - id: m1
    provider: acme
    mode: chat
    input_usd_per_mtok: "1"
    output_usd_per_mtok: "2"
    cached_input_usd_per_mtok: "0.5"
    context_window: 1000
    max_output_tokens: 100
"""


def _catalog_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text("models:\n" + body)
    return path


def test_a_custom_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_catalog_file(tmp_path, ENTRY + "    aliases: [m1-latest]\n"))
    assert set(catalog) == {"m1", "m1-latest"}
    assert catalog["m1"].price == ModelPrice(10**9, 2 * 10**9, 5 * 10**8)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("mode: chat", "mode: image"), "'mode'"),
        (('input_usd_per_mtok: "1"', 'input_usd_per_mtok: "-1"'), "'input_usd_per_mtok'"),
        (('input_usd_per_mtok: "1"', 'input_usd_per_mtok: "abc"'), "'input_usd_per_mtok'"),
        (("context_window: 1000", "context_window: 0"), "'context_window'"),
        (("max_output_tokens: 100", "max_output_tokens: 0"), "max_output_tokens"),
        (('cached_input_usd_per_mtok: "0.5"', 'cached_input_usd_per_mtok: "5"'), "cached"),
        (("mode: chat", "mode: chat\n    moode: chat"), "unknown field 'moode'"),
        (("    provider: acme\n", ""), "'provider' is required"),
    ],
)
def test_a_bad_entry_names_the_entry_and_field(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    body = ENTRY.replace(*change)
    with pytest.raises(ValueError, match=r"models\[0\] 'm1'") as caught:
        load_catalog(_catalog_file(tmp_path, body))
    assert expected in str(caught.value)


def test_ids_and_aliases_are_unique(tmp_path: Path) -> None:
    second = ENTRY.replace("id: m1", "id: m2") + "    aliases: [m1]\n"
    with pytest.raises(ValueError, match=r"models\[1\] 'm2'.*'m1' is already"):
        load_catalog(_catalog_file(tmp_path, ENTRY + second))
