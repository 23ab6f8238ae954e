"""The token estimate reads bodies the proxy has not validated beyond a few fields: whatever JSON
stands in a message, it answers a count and never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.providers.estimate import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REQUEST,
    chat_prompt_tokens,
    text_input_tokens,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
fields = st.sampled_from(
    ["role", "content", "tool_calls", "name", "function", "arguments", "text", "type"]
)
messages = st.dictionaries(fields, json_values, max_size=5)


@settings(max_examples=500)
@given(st.lists(messages | json_values, max_size=5), json_values)
def test_any_messages_give_a_count(items: list[Any], tools: Any) -> None:
    count = chat_prompt_tokens({"messages": items, "tools": tools})
    dicts = sum(isinstance(item, dict) for item in items)
    assert count >= TOKENS_PER_REQUEST + dicts * TOKENS_PER_MESSAGE


@settings(max_examples=300)
@given(json_values)
def test_any_prompt_or_input_gives_a_count(value: Any) -> None:
    assert text_input_tokens(value) >= 0


def test_tool_calls_that_are_not_a_list_are_ignored() -> None:
    for odd in (1.5, "calls", {"function": {"arguments": "x"}}, True):
        message = {"role": "assistant", "content": "hi", "tool_calls": odd}
        assert (
            chat_prompt_tokens({"messages": [message]})
            == TOKENS_PER_REQUEST + TOKENS_PER_MESSAGE + 1
        )
