from pathlib import Path

import pytest

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.config import (
    DEFAULT_AZURE_API_VERSION,
    DEFAULT_MAX_CONNECTIONS,
    ProviderSettings,
    load_providers,
)
from sluicegate.providers.model_entries import DEFAULT_CONTEXT_WINDOW, DEFAULT_MAX_OUTPUT_TOKENS

ENVIRON = {"MOCK_API_KEY": "x"}

EXAMPLE = """\
providers:
  - name: local-mock
    type: openai
    base_url: http://127.0.0.1:18080/v1
    api_key_env: MOCK_API_KEY
models:
  - id: gpt-4o-mini
    provider: local-mock
    upstream_model: gpt-4o-mini
    mode: chat
    input_usd_per_mtok: 0.15
    output_usd_per_mtok: 0.60
"""

PROVIDER = """\
providers:
  - name: p
    type: openai
    base_url: https://api.example.com/v1/
    api_key: sk-secret-value
models:
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    return path


def _load(tmp_path: Path, text: str) -> ProviderSettings:
    return load_providers(_write(tmp_path, text), ENVIRON)


def _error(tmp_path: Path, text: str, environ: dict[str, str] = ENVIRON) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_providers(_write(tmp_path, text), environ)
    assert caught.value.setting == "SLUICEGATE_PROVIDERS"
    assert "\n" not in caught.value.problem
    assert caught.value.problem.startswith(str(tmp_path / "providers.yaml") + ": ")
    return caught.value.problem


def test_no_file_means_nothing_is_served() -> None:
    assert load_providers(None, {}) == ProviderSettings.empty()


def test_the_contract_example_loads(tmp_path: Path) -> None:
    settings = _load(tmp_path, EXAMPLE)
    provider = settings.providers["local-mock"]
    assert (provider.type, provider.base_url, provider.api_key) == (
        "openai",
        "http://127.0.0.1:18080/v1",
        "x",
    )
    assert provider.max_connections == DEFAULT_MAX_CONNECTIONS
    assert provider.timeout_seconds is None and provider.headers == ()
    route = settings.models["gpt-4o-mini"].primary
    assert route.provider is provider
    assert (route.mode, route.upstream_model, route.catalog_id) == (
        "chat",
        "gpt-4o-mini",
        "gpt-4o-mini",
    )
    assert route.price.input_nusd_per_mtok == 150_000_000
    assert route.price.output_nusd_per_mtok == 600_000_000
    assert (
        route.price.cached_input_nusd_per_mtok == 150_000_000
    )  # explicit price: no cache discount
    assert route.context_window == 128_000


def test_upstream_model_defaults_to_id_and_catalog_fills_the_rest(tmp_path: Path) -> None:
    settings = _load(tmp_path, PROVIDER + "  - id: claude-3-5-haiku-latest\n    provider: p\n")
    route = settings.models["claude-3-5-haiku-latest"].primary
    assert route.upstream_model == "claude-3-5-haiku-latest"
    assert route.catalog_id == "claude-3-5-haiku-20241022"
    assert route.mode == "chat"
    assert route.price.input_nusd_per_mtok == 800_000_000
    assert route.price.cached_input_nusd_per_mtok == 80_000_000
    assert (route.context_window, route.max_output_tokens) == (200_000, 8192)


def test_catalog_is_found_by_upstream_model_then_by_id(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        PROVIDER
        + "  - id: cheap\n    provider: p\n    upstream_model: gpt-4.1-nano\n"
        + "  - id: gpt-4o\n    provider: p\n    upstream_model: my-deployment\n",
    )
    assert settings.models["cheap"].primary.catalog_id == "gpt-4.1-nano"
    assert settings.models["gpt-4o"].primary.catalog_id == "gpt-4o"
    assert settings.models["gpt-4o"].primary.upstream_model == "my-deployment"
    assert list(settings.models) == ["cheap", "gpt-4o"]


def test_explicit_prices_and_limits_override_the_catalog(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        PROVIDER
        + """\
  - id: gpt-4o
    provider: p
    input_usd_per_mtok: "2"
    output_usd_per_mtok: "8"
    cached_input_usd_per_mtok: "0.000000001"
    context_window: 64000
    max_output_tokens: 1000
""",
    )
    route = settings.models["gpt-4o"].primary
    assert route.price.input_nusd_per_mtok == 2_000_000_000
    assert route.price.output_nusd_per_mtok == 8_000_000_000
    assert route.price.cached_input_nusd_per_mtok == 1
    assert (route.context_window, route.max_output_tokens) == (64_000, 1000)
    assert route.catalog_id == "gpt-4o"


def test_unknown_model_with_a_price_takes_default_limits(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        PROVIDER
        + """\
  - id: house-model
    provider: p
    mode: chat
    input_usd_per_mtok: 1
    output_usd_per_mtok: 3
  - id: house-embed
    provider: p
    mode: embedding
    input_usd_per_mtok: 0.01
""",
    )
    chat, embed = settings.models["house-model"].primary, settings.models["house-embed"].primary
    assert chat.catalog_id is None
    assert (chat.context_window, chat.max_output_tokens) == (
        DEFAULT_CONTEXT_WINDOW,
        DEFAULT_MAX_OUTPUT_TOKENS,
    )
    assert chat.price.cached_input_nusd_per_mtok == chat.price.input_nusd_per_mtok == 10**9
    assert embed.price.output_nusd_per_mtok == 0 and embed.max_output_tokens == 0
    assert embed.price.input_nusd_per_mtok == 10_000_000


def test_provider_options(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        """\
providers:
  - name: az
    type: azure
    base_url: https://example.openai.azure.com/
    api_key: k
    headers: {x-team: blue}
    max_connections: 8
    timeout_seconds: 30
  - name: az-pinned
    type: azure
    base_url: https://example.openai.azure.com
    api_version: 2025-01-01-preview
  - name: claude
    type: anthropic
    base_url: https://api.anthropic.com
models: []
""",
    )
    azure = settings.providers["az"]
    assert azure.base_url == "https://example.openai.azure.com"
    assert azure.api_version == DEFAULT_AZURE_API_VERSION
    assert azure.headers == (("x-team", "blue"),)
    assert (azure.max_connections, azure.timeout_seconds) == (8, 30.0)
    assert settings.providers["az-pinned"].api_version == "2025-01-01-preview"
    assert settings.providers["claude"].api_version is None
    assert settings.providers["claude"].api_key is None


def test_secrets_never_appear_in_repr(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        PROVIDER.replace("models:", "    headers: {api-key: hdr-secret}\nmodels:")
        + "  - id: gpt-4o\n    provider: p\n",
    )
    route = settings.models["gpt-4o"].primary
    for text in (repr(settings.providers["p"]), repr(route), repr(settings)):
        assert "sk-secret-value" not in text
        assert "hdr-secret" not in text


MODEL = "  - id: m\n    provider: p\n    mode: chat\n    input_usd_per_mtok: 1\n"


MISTAKES = [
    ("providers: [", "invalid YAML: line"),
    ("- just a list\n", "expected a mapping with 'providers:' and 'models:'"),
    ("providers: []\nmodel: []\n", "unknown field 'model' (did you mean 'models'?)"),
    (
        PROVIDER.replace("type: openai", "type: cohere"),
        "providers[0] 'p': 'type': Input should be 'openai', 'anthropic' or 'azure'",
    ),
    (
        PROVIDER.replace("https://api.example.com/v1/", "ftp://api.example.com"),
        "providers[0] 'p': 'base_url': must be an http:// or https:// URL with a host",
    ),
    (
        PROVIDER.replace("https://api.example.com/v1/", "http:///v1"),
        "providers[0] 'p': 'base_url': must be an http:// or https:// URL",
    ),
    (
        PROVIDER.replace("api_key:", "api_kee:"),
        "providers[0] 'p': unknown field 'api_kee' (did you mean 'api_key'?)",
    ),
    (
        PROVIDER.replace("    api_key: sk-secret-value\n", "    api_key_env: NOPE_KEY\n"),
        "providers[0] 'p': 'api_key_env': environment variable NOPE_KEY is not set",
    ),
    (
        PROVIDER.replace("models:", "    api_key_env: MOCK_API_KEY\nmodels:"),
        "providers[0] 'p': give api_key_env or api_key, not both",
    ),
    (
        PROVIDER.replace("models:", "    max_connections: 0\nmodels:"),
        "providers[0] 'p': 'max_connections'",
    ),
    (
        PROVIDER.replace("models:", "    headers: {'bad header': x}\nmodels:"),
        "providers[0] 'p': 'headers': 'bad header' is not a valid HTTP header name",
    ),
    (
        PROVIDER.replace(
            "models:", "  - name: p\n    type: openai\n    base_url: http://h\nmodels:"
        ),
        "providers[1] 'p': duplicate name",
    ),
    (PROVIDER.replace("- name: p\n    type", "- type"), "providers[0]: 'name' is required"),
    (
        PROVIDER + MODEL.replace("provider: p", "provider: q"),
        "models[0] 'm': 'provider': 'q' is not a listed provider (listed: p)",
    ),
    (PROVIDER + "  - id: gpt-4o\n    provider: p\n" * 2, "models[1] 'gpt-4o': duplicate id"),
    (
        PROVIDER + "  - id: mystery\n    provider: p\n",
        "models[0] 'mystery': 'mystery' is not in the built-in catalog; "
        "add mode (chat or embedding), input_usd_per_mtok, output_usd_per_mtok",
    ),
    (
        PROVIDER + "  - id: mystery\n    provider: p\n    mode: chat\n",
        "models[0] 'mystery': 'mystery' is not in the built-in catalog, and the entry has no "
        "price; add input_usd_per_mtok and output_usd_per_mtok",
    ),
    (
        PROVIDER + "  - id: gpt-4o\n    provider: p\n    mode: embedding\n",
        "models[0] 'gpt-4o': the built-in catalog's 'gpt-4o' is a chat model, not embedding",
    ),
    (PROVIDER + MODEL, "models[0] 'm': 'output_usd_per_mtok' is required"),
    (
        PROVIDER + "  - id: gpt-4o\n    provider: p\n    output_usd_per_mtok: 1\n",
        "models[0] 'gpt-4o': 'input_usd_per_mtok' is required when another price is given",
    ),
    (
        PROVIDER + MODEL + "    output_usd_per_mtok: 1\n    cached_input_usd_per_mtok: 2\n",
        "models[0] 'm': 'cached_input_usd_per_mtok' is above input_usd_per_mtok",
    ),
    (
        PROVIDER + MODEL.replace("input_usd_per_mtok: 1", "input_usd_per_mtok: -1"),
        "models[0] 'm': 'input_usd_per_mtok': -1 is negative",
    ),
    (
        PROVIDER + MODEL.replace("input_usd_per_mtok: 1", "input_usd_per_mtok: 0.0000000001"),
        "models[0] 'm': 'input_usd_per_mtok': 1e-10 has more than 9 decimal places",
    ),
    (
        PROVIDER + MODEL.replace("input_usd_per_mtok: 1", "input_usd_per_mtok: yes"),
        "models[0] 'm': 'input_usd_per_mtok': True is not a price",
    ),
    (
        PROVIDER + MODEL + "    output_usd_per_mtok: 1\n    max_output_tokens: 0\n",
        "models[0] 'm': 'max_output_tokens' must be above 0 for a chat model",
    ),
    (
        PROVIDER + MODEL + "    output_usd_per_mtok: 1\n    contex_window: 10\n",
        "models[0] 'm': unknown field 'contex_window' (did you mean 'context_window'?)",
    ),
    (PROVIDER + "  - gpt-4o\n", "models[0]: expected a mapping of fields"),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES, ids=[e for _, e in MISTAKES])
def test_each_mistake_is_one_line_naming_entry_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _error(tmp_path, text)


def test_empty_api_key_variable_is_refused(tmp_path: Path) -> None:
    problem = _error(tmp_path, EXAMPLE, environ={"MOCK_API_KEY": ""})
    assert (
        "providers[0] 'local-mock': 'api_key_env': environment variable MOCK_API_KEY is empty"
        in problem
    )


def test_unreadable_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_providers(tmp_path / "missing.yaml", ENVIRON)
    assert caught.value.setting == "SLUICEGATE_PROVIDERS"
    assert "missing.yaml: cannot read the file" in caught.value.problem


def test_errors_never_echo_secrets(tmp_path: Path) -> None:
    text = PROVIDER.replace("https://api.example.com/v1/", "ftp://user:pw-secret@h")
    assert "pw-secret" not in _error(tmp_path, text)
    text = PROVIDER.replace("models:", '    headers: {x-key: "a\\nhdr-secret"}\nmodels:')
    assert "hdr-secret" not in _error(tmp_path, text)


def test_a_custom_catalog_can_be_passed(tmp_path: Path) -> None:
    settings = load_providers(
        _write(
            tmp_path,
            PROVIDER + "  - id: gpt-4o\n    provider: p\n    mode: chat\n"
            "    input_usd_per_mtok: 1\n    output_usd_per_mtok: 1\n",
        ),
        ENVIRON,
        catalog={},
    )
    assert settings.models["gpt-4o"].primary.catalog_id is None


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.anthropic.com",
        "https://api.anthropic.com/",
        "https://api.anthropic.com/v1",
        "https://api.anthropic.com/v1/",
    ],
)
def test_an_anthropic_base_url_works_with_or_without_its_version(
    tmp_path: Path, base_url: str
) -> None:
    from sluicegate.providers.anthropic import AnthropicAdapter
    from sluicegate.providers.base import Endpoint

    settings = _load(
        tmp_path,
        f"""providers:
  - name: claude
    type: anthropic
    base_url: {base_url}
    api_key: k
models:
  - id: claude-sonnet-4-5-20250929
    provider: claude
""",
    )
    route = settings.models["claude-sonnet-4-5-20250929"].primary
    adapter = AnthropicAdapter(settings.providers["claude"])
    body = {"model": route.id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    call = adapter.prepare(Endpoint.CHAT, body, route, False)
    assert call.url == "https://api.anthropic.com/v1/messages"


def test_a_model_outside_the_catalog_priced_for_output_is_a_chat_model(tmp_path: Path) -> None:
    """An Azure deployment has a name of the operator's: priced in full, it needs no mode."""
    settings = _load(
        tmp_path,
        """providers:
  - name: az
    type: azure
    base_url: https://example.openai.azure.com
    api_key: k
models:
  - id: gpt-4o
    provider: az
    upstream_model: prod-deployment
  - id: corp-chat
    provider: az
    upstream_model: corp-deployment
    input_usd_per_mtok: 1
    output_usd_per_mtok: 2
""",
    )
    assert settings.models["gpt-4o"].primary.catalog_id == "gpt-4o"  # priced from the catalog by id
    corp = settings.models["corp-chat"].primary
    assert (corp.mode, corp.price.output_nusd_per_mtok) == ("chat", 2_000_000_000)
    error = _error(
        tmp_path,
        """providers:
  - name: az
    type: azure
    base_url: https://example.openai.azure.com
    api_key: k
models:
  - id: corp-embed
    provider: az
    input_usd_per_mtok: 1
""",
    )
    assert "add mode (chat or embedding)" in error
