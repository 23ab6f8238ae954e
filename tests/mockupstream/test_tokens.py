"""The mock upstream counts tokens of whatever a client sends (the gateway forwards bodies it
does not read): any JSON in a message is counted, never a crash of the mock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sluicegate.mockupstream import tokens as tk

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
message_fields = st.sampled_from(["role", "content", "tool_calls", "function", "name", "x"])
messages = st.dictionaries(message_fields, json_values, max_size=4)
shaped = st.fixed_dictionaries(
    {"role": st.just("assistant")},
    optional={
        "tool_calls": st.one_of(
            json_values,
            st.lists(st.fixed_dictionaries({}, optional={"function": json_values}), max_size=3),
        ),
        "content": json_values,
    },
)


@given(st.lists(messages | shaped, max_size=5))
def test_any_message_is_counted(chat: list[dict[str, object]]) -> None:
    assert tk.chat_prompt_tokens(chat) >= tk.PROMPT_BASE_TOKENS


def test_tool_calls_that_are_not_a_list_count_nothing_extra() -> None:
    plain = {"role": "assistant", "content": "two words"}
    for odd in (7, "call", {"function": {"arguments": "a b c"}}, [3, {"function": "f"}]):
        assert tk.message_tokens({**plain, "tool_calls": odd}) == tk.message_tokens(plain)
