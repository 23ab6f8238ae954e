"""What a routing override may say: bounded lists and strings, known data policies and
certifications, an exact positive ceiling, and, when the gateway has a providers file, only
providers, fallback models and regions it configures. Every refusal is a 422 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from sluicegate.app import create_app
from sluicegate.providers.config import load_providers
from sluicegate.routing.overrides import CERTIFICATIONS, DATA_POLICIES
from sluicegate.routing.schemas import Certification, DataPolicy
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import error, ok
from tests.factories import Org, make_org

PROVIDERS_YAML = """providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:9/v1
    api_key: test-key
    region: eu
  - name: anthropic
    type: anthropic
    base_url: http://127.0.0.1:9/v1
    api_key: test-key
models:
  - id: gpt-4o-mini
    provider: openai
  - id: claude-3-5-haiku
    provider: anthropic
    mode: chat
    input_usd_per_mtok: 0.8
    output_usd_per_mtok: 4
"""


@pytest.fixture
async def org(runtime: Runtime, app_client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, app_client, levels=2)


def test_the_api_spells_the_same_policies_and_certifications_as_the_routing() -> None:
    assert get_args(DataPolicy) == DATA_POLICIES
    assert get_args(Certification) == CERTIFICATIONS


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"provider_order": [f"p{i}" for i in range(51)]}, "provider_order"),
        ({"provider_order": ["bad\x00name"]}, "provider_order.0"),
        ({"provider_order": [""]}, "provider_order.0"),
        ({"provider_order": ["x" * 201]}, "provider_order.0"),
        ({"provider_order": "openai"}, "provider_order"),
        ({"allowed_providers": []}, "allowed_providers"),
        ({"ignored_providers": [7]}, "ignored_providers.0"),
        ({"required_policies": ["zdr", "gdpr"]}, "required_policies.1"),
        ({"required_certifications": ["pci"]}, "required_certifications.0"),
        ({"allowed_regions": []}, "allowed_regions"),
        ({"allowed_regions": ["eu\x00"]}, "allowed_regions.0"),
        ({"allowed_regions": ["r" * 33]}, "allowed_regions.0"),
        ({"fallbacks": [f"m{i}" for i in range(11)]}, "fallbacks"),
        ({"fallbacks": ["gpt\x07"]}, "fallbacks.0"),
        ({"max_cost_per_request_usd": "0"}, "max_cost_per_request_usd"),
        ({"max_cost_per_request_usd": -1}, "max_cost_per_request_usd"),
        ({"max_cost_per_request_usd": "0.0000000001"}, "max_cost_per_request_usd"),
        ({"max_cost_per_request_usd": "ten"}, "max_cost_per_request_usd"),
        ({"max_cost_per_request_usd": "1000000001"}, "max_cost_per_request_usd"),
        ({"max_cost_per_request_usd": True}, "max_cost_per_request_usd"),
        ({"on_cost_exceeded": "drop"}, "on_cost_exceeded"),
        ({"order": ["openai"]}, "order"),
        ({}, "body"),
        ({"provider_order": None, "fallbacks": None}, "body"),
    ],
)
async def test_invalid_input_is_422_naming_the_field(
    org: Org, fields: dict[str, Any], field: str
) -> None:
    answer = await org.owner.put(f"{org.base}/groups/{org.team}/routing", json=fields)
    problem = error(answer, 422)
    assert problem["details"]["field"] == field, problem
    assert problem["message"].startswith(f"{field}: "), problem
    # Nothing was stored.
    shown = ok(await org.owner.get(f"{org.base}/groups/{org.team}/routing"))
    assert shown["override"] is None


async def test_without_a_providers_file_any_name_is_taken(org: Org) -> None:
    """A gateway without a providers file serves nothing yet: there is nothing to check names
    against, and the operator may be about to add the file."""
    body = {
        "allowed_providers": ["whatever"],
        "fallbacks": ["some-model"],
        "allowed_regions": ["x"],
    }
    ok(await org.owner.put(f"{org.base}/groups/{org.team}/routing", json=body))


@pytest.fixture
async def configured(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a providers file of two providers and two models."""
    path = tmp_path / "providers.yaml"
    path.write_text(PROVIDERS_YAML)
    app = create_app(settings, runtime, load_providers(path, {}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            yield client


@pytest.mark.parametrize(
    ("fields", "field", "entry"),
    [
        ({"provider_order": ["anthropic", "opnai"]}, "provider_order", "opnai"),
        ({"allowed_providers": ["OpenAI"]}, "allowed_providers", "OpenAI"),
        ({"ignored_providers": ["azure"]}, "ignored_providers", "azure"),
        ({"fallbacks": ["gpt-4o-mini", "gpt-4o-mni"]}, "fallbacks", "gpt-4o-mni"),
        ({"allowed_regions": ["eu", "EU"]}, "allowed_regions", "EU"),
    ],
)
async def test_an_unknown_provider_or_model_is_422_naming_it(
    runtime: Runtime, configured: httpx.AsyncClient, fields: dict[str, Any], field: str, entry: str
) -> None:
    org = await make_org(runtime, configured, levels=1)
    answer = await org.owner.put(f"{org.base}/groups/{org.division}/routing", json=fields)
    problem = error(answer, 422)
    assert problem["details"] == {"field": field, "entry": entry}
    assert f"'{entry}'" in problem["message"]
    listed = {"fallbacks": "gpt-4o-mini, claude-3-5-haiku", "allowed_regions": "eu"}
    assert problem["message"].endswith(f"(configured: {listed.get(field, 'openai, anthropic')})")


async def test_configured_providers_and_models_are_taken(
    runtime: Runtime, configured: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, configured, levels=1)
    body = {
        "provider_order": ["anthropic", "openai"],
        "allowed_providers": ["openai", "anthropic"],
        "ignored_providers": ["anthropic"],
        "fallbacks": ["claude-3-5-haiku", "gpt-4o-mini"],
        "allowed_regions": ["eu"],
    }
    made = ok(await org.owner.put(f"{org.base}/groups/{org.division}/routing", json=body))
    assert {field: made[field] for field in body} == body
