"""The providers file's routing parts: providers' data policies and regions, models served by
several deployments, strategies and fallbacks; each mistake named in one line."""

from pathlib import Path

import pytest

from sluicegate.core.errors import ConfigurationError
from sluicegate.providers.config import ProviderSettings, load_providers
from sluicegate.providers.deployment import DataPolicy

TWO = """\
providers:
  - name: eu
    type: openai
    base_url: https://eu.example.com/v1
    api_key: k1
    region: eu
    zdr: true
    no_training: true
    certifications: [soc2, gdpr]
  - name: us
    type: openai
    base_url: https://us.example.com/v1
    api_key: k2
    region: us
models:
"""

DUO = """\
  - id: gpt-4o-mini
    strategy: weighted
    fallbacks: [gpt-4o]
    context_window_fallbacks: [gpt-4.1-mini]
    output_usd_per_mtok: 9
    input_usd_per_mtok: 8
    deployments:
      - provider: eu
        weight: 3
        rpm: 100
        tags: [primary]
      - provider: us
        upstream_model: my-deployment
        region: us-east
        priority: 1
        input_usd_per_mtok: 1
        output_usd_per_mtok: 2
  - id: gpt-4o
    provider: us
  - id: gpt-4.1-mini
    provider: eu
"""


def load(tmp_path: Path, text: str) -> ProviderSettings:
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    return load_providers(path, {})


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text)
    return str(caught.value)


def test_providers_declare_their_data_policies_and_region(tmp_path: Path) -> None:
    loaded = load(tmp_path, TWO + DUO)
    assert loaded.providers["eu"].policy == DataPolicy(
        zdr=True, no_training=True, certifications=frozenset({"soc2", "gdpr"}), region="eu"
    )
    assert loaded.providers["us"].policy == DataPolicy(region="us")


def test_a_model_served_by_two_deployments(tmp_path: Path) -> None:
    served = load(tmp_path, TWO + DUO).models["gpt-4o-mini"]
    assert (served.strategy, served.fallbacks, served.context_window_fallbacks) == (
        "weighted",
        ("gpt-4o",),
        ("gpt-4.1-mini",),
    )
    eu, us = served.deployments
    assert (eu.deployment, eu.upstream_model, eu.region, eu.weight, eu.rpm, eu.tags) == (
        "eu/gpt-4o-mini",
        "gpt-4o-mini",
        "eu",  # the provider's
        3,
        100,
        ("primary",),
    )
    assert (us.deployment, us.region, us.priority) == ("us/my-deployment", "us-east", 1)
    # The model's price is its deployments' default; a deployment's own price wins, whole.
    assert (eu.price.input_nusd_per_mtok, eu.price.output_nusd_per_mtok) == (8 * 10**9, 9 * 10**9)
    assert (us.price.input_nusd_per_mtok, us.price.output_nusd_per_mtok) == (10**9, 2 * 10**9)
    assert served.primary is eu


def test_the_provider_shorthand_is_one_deployment(tmp_path: Path) -> None:
    served = load(tmp_path, TWO + DUO).models["gpt-4o"]
    (only,) = served.deployments
    assert (only.provider.name, only.deployment, served.strategy, served.fallbacks) == (
        "us",
        "us/gpt-4o",
        "priority",
        (),
    )


MISTAKES = [
    (
        TWO.replace("certifications: [soc2, gdpr]", "certifications: [soc3]"),
        "providers[0] 'eu': 'certifications.0'",
    ),
    (TWO.replace("zdr: true", "zdr: yes please"), "providers[0] 'eu': 'zdr'"),
    (
        "  - id: m\n    provider: eu\n    deployments:\n      - provider: us\n",
        "models[0] 'm': give 'provider' (one deployment) or 'deployments' (a list), not both",
    ),
    ("  - id: m\n    input_usd_per_mtok: 1\n", "models[0] 'm': give 'provider'"),
    (
        "  - id: gpt-4o\n    deployments:\n      - provider: eu\n      - provider: nowhere\n",
        "models[0] 'gpt-4o': deployments[1]: 'provider': 'nowhere' is not a listed provider",
    ),
    (
        "  - id: gpt-4o\n    deployments:\n      - provider: eu\n      - provider: eu\n",
        "models[0] 'gpt-4o': deployments[1]: a second deployment named 'eu/gpt-4o'",
    ),
    (
        "  - id: gpt-4o\n    deployments:\n      - provider: eu\n"
        "      - provider: us\n        upstream_model: text-embedding-3-small\n",
        "deployments[1]: an embedding deployment of a chat model",
    ),
    (
        "  - id: gpt-4o\n    provider: eu\n    fallbacks: [nope]\n",
        "models[0] 'gpt-4o': 'fallbacks': 'nope' is not a model id of this file",
    ),
    (
        "  - id: gpt-4o\n    provider: eu\n    fallbacks: [gpt-4o]\n",
        "models[0] 'gpt-4o': 'fallbacks': a model cannot fall back to itself",
    ),
    (
        "  - id: gpt-4o\n    provider: eu\n    fallbacks: [e]\n"
        "  - id: e\n    provider: eu\n    upstream_model: text-embedding-3-small\n",
        "'fallbacks': 'e' is an embedding model, not chat",
    ),
    (
        "  - id: gpt-4o\n    strategy: fastest\n    provider: eu\n",
        "models[0] 'gpt-4o': 'strategy'",
    ),
    (
        "  - id: a\n    deployments:\n      - provider: eu\n        upstream_model: gpt-4o\n"
        "        name: main\n"
        "  - id: b\n    deployments:\n      - provider: us\n        upstream_model: gpt-4o\n"
        "        name: main\n",
        "models[1] 'b': the deployment name 'main' is already model 'a''s deployment on eu/gpt-4o",
    ),
]


@pytest.mark.parametrize(("models", "expected"), MISTAKES)
def test_each_mistake_is_one_line_naming_the_entry_and_field(
    tmp_path: Path, models: str, expected: str
) -> None:
    text = models if models.startswith("providers:") else TWO + models
    if models.startswith("providers:"):
        text += "  - id: gpt-4o\n    provider: eu\n"
    message = problem(tmp_path, text)
    assert expected in message
    assert "\n" not in message


def test_two_models_may_share_one_deployment_by_name(tmp_path: Path) -> None:
    text = TWO + (
        "  - id: a\n    deployments:\n      - provider: eu\n        upstream_model: gpt-4o\n"
        "        name: main\n"
        "  - id: b\n    deployments:\n      - provider: eu\n        upstream_model: gpt-4o\n"
        "        name: main\n"
    )
    loaded = load(tmp_path, text)
    assert loaded.models["a"].primary.deployment == loaded.models["b"].primary.deployment
