"""A call without max_tokens reserves the model's whole output limit. When that does not fit the
budget or credit left but enough output does, the gateway sends the call with the max_tokens that
fits (and says so in a header) instead of refusing it; when not even that fits, the refusal says
what is left and what the call needs."""

from __future__ import annotations

import httpx

from sluicegate.runtime import Runtime
from tests.admin import ok
from tests.guard.test_enforcement import CHAT, COST, make_chain, settled, usd
from tests.proxy.conftest import usage_events

HEADER = "x-sluicegate-max-tokens-clamped"
# gpt-4o-mini: 0.15 / 0.60 USD per 1M tokens; "abcd" is 8 prompt tokens.
PROMPT = 8 * 150
PER_OUTPUT = 600
MINIMUM = 256  # SLUICEGATE_MIN_CLAMPED_OUTPUT_TOKENS' default


async def unbounded(
    client: httpx.AsyncClient, key: str, model: str = "gpt-4o-mini"
) -> httpx.Response:
    """A chat call without max_tokens."""
    return await client.post(
        CHAT,
        json={"model": model, "messages": [{"role": "user", "content": "abcd"}]},
        headers={"authorization": f"Bearer {key}"},
    )


async def test_a_small_credit_serves_calls_without_max_tokens_until_too_little_is_left(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    ok(await chain.owner.patch(chain.base, json={"credit_enforced": True}))
    balance = 200_000  # 0.0002 USD: the model's 16,384 output tokens would need 0.0098 USD
    topup = {"amount_usd": usd(balance)}
    ok(await chain.owner.post(f"{chain.base}/credits/topups", json=topup), 201)
    clamps = []
    while True:
        answer = await unbounded(proxy_client, chain.key)
        if answer.status_code != 200:
            break
        clamps.append(int(answer.headers[HEADER]))
        assert answer.json()["usage"]["completion_tokens"] == 16
        await settled(proxy_client)
        await usage_events(runtime, chain.org_id, expect=len(clamps))
    # Each call gets what the balance left pays for after its prompt, down to the minimum.
    expected, left = [], balance
    while (fits := (left - PROMPT) // PER_OUTPUT) >= MINIMUM:
        expected.append(fits)
        left -= COST
    assert clamps == expected == [331, 313, 295, 277, 259]
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["code"] == "insufficient_credit"
    assert "insufficient for this request" in error["message"]
    assert f"balance {usd(left)} USD" in error["message"]


async def test_calls_without_max_tokens_use_nearly_all_of_a_budget(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    """One client calling until refused: the budget ends at least 95% spent, never over."""
    chain = await make_chain(runtime, proxy_client)
    # paced-model is gpt-4o-mini behind a provider whose mock answers 50 tokens.
    cost = PROMPT + 50 * PER_OUTPUT
    limit = 3_200_000
    made = await chain.budget("key", limit)
    served = 0
    while (answer := await unbounded(proxy_client, chain.key, "paced-model")).status_code == 200:
        served += 1
        assert int(answer.headers[HEADER]) >= MINIMUM
        await settled(proxy_client)
    assert answer.status_code == 402
    assert answer.json()["error"]["code"] == "budget_exceeded"
    await usage_events(runtime, chain.org_id, expect=served + 1)
    shown = ok(await chain.owner.get(f"{chain.base}/budgets/{made['id']}"))
    spent = served * cost
    assert shown["spent_usd"] == usd(spent)
    assert 0.95 * limit <= spent <= limit


async def test_a_call_that_sets_max_tokens_is_never_clamped(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    chain = await make_chain(runtime, proxy_client)
    await chain.budget("key", 1_000_000)
    answer = await proxy_client.post(
        CHAT,
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "abcd"}],
            "max_tokens": 5_000,
        },
        headers={"authorization": f"Bearer {chain.key}"},
    )
    assert answer.status_code == 402
    assert HEADER not in answer.headers
    assert "a smaller max_tokens may fit" in answer.json()["error"]["message"]
