"""The request's own routing fields, OpenRouter's shape, sent by the official openai SDK through
`extra_body`: a `models` array of fallbacks and a `provider` object."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from sluicegate.runtime import Runtime
from tests.factories import Tenant
from tests.routing.conftest import Mock

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def sdk(routed: httpx.AsyncClient, tenant: Tenant) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url="http://gateway.test/v1", api_key=tenant.key, http_client=routed, max_retries=0
    )
    yield client


async def served_by(sdk: openai.AsyncOpenAI, model: str, **extra: object) -> tuple[str, str]:
    """(model id, provider) that answered, from the gateway's headers."""
    answer = await sdk.chat.completions.with_raw_response.create(
        model=model, messages=HELLO, extra_body=extra or None
    )
    answer.parse()
    return answer.headers["x-sluicegate-model"], answer.headers["x-sluicegate-provider"]


async def test_the_models_array_replaces_the_files_fallbacks(
    sdk: openai.AsyncOpenAI, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    assert await served_by(sdk, "cheap") == ("dear", "beta")  # the file's fallback
    assert await served_by(sdk, "cheap", models=["cheap", "beta-only"]) == ("beta-only", "beta")


async def test_a_fallback_the_key_may_not_use_is_refused_by_name(
    sdk: openai.AsyncOpenAI, alpha: Mock
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await served_by(sdk, "cheap", models=["no-such-model"])
    assert "no-such-model" in str(caught.value)


async def test_provider_order_only_and_ignore_choose_the_deployment(
    sdk: openai.AsyncOpenAI, alpha: Mock, beta: Mock
) -> None:
    assert await served_by(sdk, "duo") == ("duo", "alpha")
    assert await served_by(sdk, "duo", provider={"order": ["beta", "alpha"]}) == ("duo", "beta")
    assert await served_by(sdk, "duo", provider={"only": ["beta"]}) == ("duo", "beta")
    assert await served_by(sdk, "duo", provider={"ignore": ["alpha"]}) == ("duo", "beta")
    assert await served_by(sdk, "duo", provider={"sort": "price"}) == ("duo", "alpha")
    # Dearer than 2 USD per million prompt tokens: beta (3) is left out.
    assert await served_by(sdk, "duo", provider={"max_price": {"prompt": 2}}) == ("duo", "alpha")


async def test_allow_fallbacks_false_keeps_to_the_providers_named(
    sdk: openai.AsyncOpenAI, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    fixed = {"order": ["alpha"], "allow_fallbacks": False}
    with pytest.raises(openai.APIStatusError) as caught:
        await served_by(sdk, "duo", provider=fixed)
    assert caught.value.status_code == 502
    assert beta.requests == 0
    # Allowed, the same order falls back to beta.
    assert await served_by(sdk, "duo", provider={"order": ["alpha"]}) == ("duo", "beta")


async def test_zdr_and_data_collection_deny_never_reach_a_provider_that_keeps_data(
    sdk: openai.AsyncOpenAI, runtime: Runtime, tenant: Tenant, alpha: Mock, beta: Mock
) -> None:
    alpha.fail("error-500")
    for provider in ({"zdr": True}, {"data_collection": "deny"}):
        with pytest.raises(openai.APIStatusError) as caught:
            await served_by(sdk, "duo", provider=provider)
        assert caught.value.status_code == 502  # alpha failed; beta was never an option
    assert beta.requests == 0
    # A model only beta serves: refused before anything is sent.
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await served_by(sdk, "beta-only", provider={"zdr": True})
    assert refused.value.body["code"] == "no_compliant_provider"  # type: ignore[index]
    assert "provider.zdr" in refused.value.body["message"]  # type: ignore[index]
    assert beta.requests == 0


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ({"order": "alpha"}, "provider.order"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"data_collection": "never"}, "provider.data_collection"),
        ({"max_price": {"prompt": "cheap"}}, "provider.max_price.prompt"),
        ({"sort": "fastest"}, "provider.sort"),
        ({"zdr": 1}, "provider.zdr"),
    ],
)
async def test_a_bad_routing_field_is_a_400_naming_it(
    sdk: openai.AsyncOpenAI, provider: dict[str, object], field: str, alpha: Mock
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await served_by(sdk, "duo", provider=provider)
    assert caught.value.body["param"] == field  # type: ignore[index]
    assert alpha.requests == 0


async def test_unknown_provider_fields_are_ignored_and_nothing_reaches_the_upstream(
    sdk: openai.AsyncOpenAI, alpha: Mock
) -> None:
    provider = {"quantizations": ["fp8"], "order": ["alpha"]}
    assert await served_by(sdk, "duo", provider=provider, models=["duo"]) == ("duo", "alpha")
    sent = httpx.get(f"{alpha.url}/_mock/requests").json()["requests"][-1]["body"]
    assert "provider" not in sent and "models" not in sent
