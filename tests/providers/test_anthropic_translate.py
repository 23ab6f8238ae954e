"""OpenAI chat completions <-> Anthropic Messages translation: requests, responses, streams, errors.

Outputs meant for OpenAI clients are checked against the openai SDK's own types.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from sluicegate.providers.anthropic_translate import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    TranslationError,
    anthropic_error_to_openai,
    anthropic_usage_to_openai,
    chat_request_to_messages,
    messages_response_to_chat,
    parse_sse,
)

MODEL = "claude-sonnet-4-5"
PNG_DATA = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"  # truncated: never decoded
)


def translate(body: dict[str, Any], max_output_tokens: int = 8192) -> dict[str, Any]:
    return chat_request_to_messages(body, MODEL, max_output_tokens)


def refusal(body: Any) -> TranslationError:
    with pytest.raises(TranslationError) as caught:
        chat_request_to_messages(body, MODEL, 8192)
    return caught.value


def user(content: Any = "hi") -> dict[str, Any]:
    return {"role": "user", "content": content}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_anthropic_version_header_value() -> None:
    assert ANTHROPIC_VERSION == "2023-06-01"


# --- requests -----------------------------------------------------------------------------------


def test_system_and_developer_messages_anywhere_become_one_system_prompt() -> None:
    out = translate(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                user("hi"),
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "assistant", "content": "Salut"},
                {"role": "system", "content": ""},
            ]
        }
    )
    assert out["system"] == "Be brief.\n\nAnswer in French."
    assert out["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Salut"},
    ]
    assert out["model"] == MODEL


def test_a_request_without_system_messages_has_no_system_field() -> None:
    assert "system" not in translate({"messages": [user()]})


def test_text_and_image_parts_become_anthropic_blocks() -> None:
    out = translate(
        {
            "messages": [
                user(
                    [
                        {"type": "text", "text": "What is in these?"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": f"data:image/png;base64,{PNG_DATA}",
                                "detail": "low",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ]
                )
            ]
        }
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG_DATA},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "type"),
        (
            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}},
            "image_url.url",
        ),
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "image_url.url"),
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "image_url.url"),
        ({"type": "image_url", "image_url": {}}, "image_url.url"),
        ({"type": "text", "text": 5}, "text"),
        ("just a string", None),
    ],
)
def test_an_unsupported_content_part_names_its_field(part: Any, param: str | None) -> None:
    error = refusal({"messages": [user([{"type": "text", "text": "look"}, part])]})
    expected = "messages[0].content[1]" + (f".{param}" if param else "")
    assert error.param == expected
    assert expected in str(error)


def test_tool_calls_and_results_merge_into_alternating_turns() -> None:
    out = translate(
        {
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                user("Weather in Paris and Rome?"),
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        tool_call("call_1", "get_weather", '{"city": "Paris"}'),
                        tool_call("call_2", "get_weather", '{"city": "Rome"}'),
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                user("And tomorrow?"),
            ]
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


def test_consecutive_messages_of_one_role_merge_into_one_turn() -> None:
    out = translate(
        {
            "messages": [
                user("first"),
                user([{"type": "text", "text": "second"}]),
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ]
        }
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
    ]


def test_an_assistant_tool_call_without_content_or_arguments() -> None:
    out = translate(
        {
            "messages": [
                user(),
                {"role": "assistant", "content": None, "tool_calls": [tool_call("c", "now", "")]},
                {"role": "tool", "tool_call_id": "c", "content": ""},
            ]
        }
    )
    assert out["messages"][1:] == [
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "c", "name": "now", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c"}]},
    ]


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", "null", "42"])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    error = refusal(
        {
            "messages": [
                user(),
                {"role": "assistant", "tool_calls": [tool_call("c", "f", arguments)]},
            ]
        }
    )
    assert error.param == "messages[1].tool_calls[0].function.arguments"


def test_a_tool_message_needs_its_call_id() -> None:
    error = refusal({"messages": [user(), {"role": "tool", "content": "x"}]})
    assert error.param == "messages[1].tool_call_id"


def test_function_tools_become_input_schemas() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    out = translate(
        {
            "messages": [user()],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": schema,
                    },
                },
                {"type": "function", "function": {"name": "now"}},
            ],
        }
    )
    assert out["tools"] == [
        {"name": "get_weather", "description": "Weather", "input_schema": schema},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in out


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
        (None, None, None),
    ],
)
def test_tool_choice_variants(tool_choice: Any, parallel: bool | None, expected: Any) -> None:
    body: dict[str, Any] = {"messages": [user()], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert translate(body).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in translate({"messages": [user()], "tool_choice": "required"})


@pytest.mark.parametrize(
    "body_part",
    [
        {"tool_choice": "sometimes"},
        {"tool_choice": {"type": "allowed_tools"}},
        {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
        {"parallel_tool_calls": "no"},
    ],
)
def test_unusable_tool_settings_are_refused(body_part: dict[str, Any]) -> None:
    error = refusal({"messages": [user()], "tools": [WEATHER_TOOL], **body_part})
    assert error.param is not None
    assert error.param.split("[")[0] in body_part


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("END", ["END"]), (["a", "b"], ["a", "b"]), ([], None), (None, None), ("", None)],
)
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str] | None) -> None:
    assert translate({"messages": [user()], "stop": stop}).get("stop_sequences") == expected


def test_a_stop_that_is_not_text_is_refused() -> None:
    assert refusal({"messages": [user()], "stop": ["ok", 3]}).param == "stop"


def test_max_tokens_prefers_the_request_then_the_model_limit() -> None:
    assert translate({"messages": [user()], "max_tokens": 50})["max_tokens"] == 50
    both = {"messages": [user()], "max_tokens": 50, "max_completion_tokens": 70}
    assert translate(both)["max_tokens"] == 70
    assert translate({"messages": [user()]}, max_output_tokens=8192)["max_tokens"] == 8192
    assert (
        translate({"messages": [user()]}, max_output_tokens=0)["max_tokens"] == DEFAULT_MAX_TOKENS
    )
    assert refusal({"messages": [user()], "max_tokens": 0}).param == "max_tokens"
    assert refusal({"messages": [user()], "max_completion_tokens": "9"}).param == (
        "max_completion_tokens"
    )


def test_sampling_stream_and_user_pass_and_openai_only_fields_are_dropped() -> None:
    out = translate(
        {
            "model": "gpt-4o",
            "messages": [user()],
            "temperature": 0.2,
            "top_p": 0.9,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "alice",
            "frequency_penalty": 0.5,
            "presence_penalty": 0.1,
            "logprobs": True,
            "top_logprobs": 2,
            "seed": 7,
            "n": 1,
            "reasoning_effort": "low",
        },
        max_output_tokens=1024,
    )
    assert out == {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "alice"},
    }


def test_metadata_user_wins_over_user() -> None:
    body = {"messages": [user()], "user": "alice", "metadata": {"user": "bob"}}
    assert translate(body)["metadata"] == {"user_id": "bob"}


def test_more_than_one_choice_is_refused() -> None:
    error = refusal({"messages": [user()], "n": 2})
    assert error.param == "n"
    assert "n=1" in str(error)


def test_json_object_response_format_is_asked_for_in_the_system_prompt() -> None:
    out = translate(
        {
            "messages": [{"role": "system", "content": "Extract names."}, user()],
            "response_format": {"type": "json_object"},
        }
    )
    assert out["system"].startswith("Extract names.\n\n")
    assert "single valid JSON object" in out["system"]
    assert "system" not in translate({"messages": [user()], "response_format": {"type": "text"}})


def test_json_schema_response_format_puts_the_schema_in_the_system_prompt() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    body = {
        "messages": [user()],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
    }
    assert translate(body)["system"].endswith(
        '{"type":"object","properties":{"name":{"type":"string"}}}'
    )
    nested: Any = {}
    for _ in range(300):
        nested = {"items": nested}
    body["response_format"]["json_schema"]["schema"] = nested  # type: ignore[index]
    assert refusal(body).param == "response_format.json_schema.schema"


def test_odd_numbers_are_refused_or_passed_never_crash() -> None:
    assert translate({"messages": [user()], "temperature": 10**400})["temperature"] == 10**400
    assert refusal({"messages": [user()], "top_p": float("nan")}).param == "top_p"
    assert refusal({"messages": [user()], "temperature": True}).param == "temperature"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [1]}, "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": 5, "content": "hi"}]}, "messages[0].role"),
        ({"messages": [user(), {"role": "wizard", "content": "x"}]}, "messages[1].role"),
        ({"messages": [{"role": "system", "content": "only me"}]}, "messages"),
        ({"messages": [user(None)]}, "messages[0].content"),
        ({"messages": [user(), {"role": "assistant"}]}, "messages[1].content"),
        ({"messages": [{"role": "system", "content": [{"type": "image_url"}]}]}, None),
        ({"messages": [user()], "temperature": "hot"}, "temperature"),
        ({"messages": [user()], "functions": [{"name": "f"}]}, "functions"),
        ({"messages": [user()], "response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, Any], param: str | None) -> None:
    error = refusal(body)
    if param is not None:
        assert error.param == param
    assert error.param is not None and error.param in str(error)


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refusal(["messages"]).param is None


def sometimes_junk(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-formed values, so deep code paths are reached, and 1 in 10 arbitrary JSON."""
    return st.integers(0, 9).flatmap(lambda roll: valid if roll else json_values)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
names = st.text(min_size=1, max_size=6)
arguments = st.sampled_from(['{"a": 1}', "", "{", "[]", "null", "{}"]) | st.text(max_size=10)
image_urls = st.sampled_from(
    ["data:image/png;base64,AA", "data:image/svg+xml;base64,AA", "data:,", "https://x/y", "x"]
)
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "refusal", "input_audio"])},
    optional={
        "text": sometimes_junk(st.text(max_size=10)),
        "refusal": sometimes_junk(st.text(max_size=10)),
        "image_url": sometimes_junk(st.fixed_dictionaries({"url": image_urls}) | image_urls),
    },
)
contents = st.text(max_size=10) | st.lists(sometimes_junk(parts), max_size=3)
tool_calls = st.fixed_dictionaries(
    {
        "id": sometimes_junk(names),
        "type": sometimes_junk(st.just("function")),
        "function": sometimes_junk(
            st.fixed_dictionaries({"name": sometimes_junk(names), "arguments": arguments})
        ),
    }
)
text_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": names}), max_size=2)


def message(role: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"role": sometimes_junk(st.just(role)), **{k: sometimes_junk(v) for k, v in fields.items()}}
    )


messages = st.one_of(
    message("system", content=names | text_parts),
    message("developer", content=names | text_parts),
    message("user", content=contents),
    message("user", content=contents),
    message("assistant", content=contents),
    message(
        "assistant",
        content=st.none() | names,
        tool_calls=st.lists(sometimes_junk(tool_calls), min_size=1, max_size=2),
    ),
    message("tool", tool_call_id=names, content=names | text_parts),
)
tools = st.fixed_dictionaries(
    {
        "type": sometimes_junk(st.just("function")),
        "function": sometimes_junk(
            st.fixed_dictionaries(
                {"name": sometimes_junk(names)},
                optional={
                    "description": sometimes_junk(st.text(max_size=10)),
                    "parameters": sometimes_junk(st.dictionaries(names, json_values, max_size=3)),
                },
            )
        ),
    }
)
tool_choices = st.sampled_from(["auto", "required", "none"]) | st.fixed_dictionaries(
    {"type": st.just("function"), "function": st.fixed_dictionaries({"name": names})}
)
response_formats = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema"])},
    optional={"json_schema": st.fixed_dictionaries({"schema": json_values})},
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(1, 10_000),
    "max_completion_tokens": st.integers(1, 10_000),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3),
    "stream": st.booleans(),
    "user": names,
    "metadata": st.dictionaries(st.sampled_from(["user", "tag"]), names, max_size=2),
    "n": st.just(1),
    "tools": st.lists(sometimes_junk(tools), max_size=2),
    "tool_choice": tool_choices,
    "parallel_tool_calls": st.booleans(),
    "response_format": response_formats,
    "seed": st.integers(),
}
shaped_bodies = st.fixed_dictionaries(
    {"messages": sometimes_junk(st.lists(sometimes_junk(messages), min_size=1, max_size=6))},
    optional={key: sometimes_junk(valid) for key, valid in FIELDS.items()},
)
any_bodies = st.one_of(
    shaped_bodies,
    shaped_bodies,
    st.dictionaries(st.sampled_from(["messages", *FIELDS]) | st.text(), json_values),
    json_values,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=any_bodies)
def test_any_body_translates_or_raises_a_translation_error(body: Any) -> None:
    try:
        out = chat_request_to_messages(body, MODEL, 1000)
    except TranslationError as error:
        assert error.param is None or isinstance(error.param, str)
        return
    assert isinstance(out, dict)
    roles = [turn["role"] for turn in out["messages"]]
    assert roles and all(a != b for a, b in itertools.pairwise(roles))
    json.dumps(out)  # the body can be sent


# --- whole responses ---------------------------------------------------------------------------


def chat_of(resp: dict[str, Any]) -> dict[str, Any]:
    chat = messages_response_to_chat(resp, "claude-sonnet", "chatcmpl-1", 1_700_000_000)
    parsed = ChatCompletion.model_validate(chat)
    assert not parsed.model_extra and not parsed.choices[0].message.model_extra
    return chat


def anthropic_message(
    content: list[dict[str, Any]], stop_reason: str, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        **extra,
    }


USAGE = {
    "input_tokens": 10,
    "output_tokens": 20,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 5,
}
OPENAI_USAGE = {
    "prompt_tokens": 115,
    "completion_tokens": 20,
    "total_tokens": 135,
    "prompt_tokens_details": {"cached_tokens": 100},
}


def test_a_text_response_becomes_a_chat_completion_with_usage() -> None:
    content = [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]
    chat = chat_of(anthropic_message(content, "end_turn", usage=USAGE))
    assert chat == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "claude-sonnet",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }


def test_tool_use_blocks_become_tool_calls() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]
    message = chat_of(anthropic_message(content, "tool_use", usage=USAGE))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    calls = message["message"]["tool_calls"]
    assert calls == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_text_before_a_tool_call_is_kept() -> None:
    content = [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}},
    ]
    message = chat_of(anthropic_message(content, "tool_use"))["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert len(message["tool_calls"]) == 1


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop_reason: Any, finish_reason: str) -> None:
    chat = chat_of(anthropic_message([{"type": "text", "text": "x"}], stop_reason))
    assert chat["choices"][0]["finish_reason"] == finish_reason


def test_a_response_without_usage_has_no_usage_for_the_caller_to_estimate() -> None:
    assert "usage" not in chat_of(anthropic_message([{"type": "text", "text": "x"}], "end_turn"))


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    assert anthropic_usage_to_openai(USAGE) == OPENAI_USAGE
    nulls = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": None}
    assert anthropic_usage_to_openai(nulls) == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


# --- streams -----------------------------------------------------------------------------------


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for name, data in events
    )


def message_start(usage: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    message = {**anthropic_message([], None), "stop_reason": None}  # type: ignore[arg-type]
    if usage is not None:
        message["usage"] = usage
    return ("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})


def text_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return delta(index, {"type": "text_delta", "text": text})


def json_delta(index: int, partial: str) -> tuple[str, dict[str, Any]]:
    return delta(index, {"type": "input_json_delta", "partial_json": partial})


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str, output_tokens: int | None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if output_tokens is not None:
        data["usage"] = {"output_tokens": output_tokens}
    return ("message_delta", data)


MESSAGE_STOP = ("message_stop", {"type": "message_stop"})
PING = ("ping", {"type": "ping"})
START_USAGE = {
    "input_tokens": 25,
    "output_tokens": 1,
    "cache_read_input_tokens": 10,
    "cache_creation_input_tokens": 0,
}
TEXT_EVENTS = [
    message_start(START_USAGE),
    block_start(0, {"type": "text", "text": ""}),
    PING,
    text_delta(0, "Hello"),
    text_delta(0, ", world"),
    block_stop(0),
    message_delta("end_turn", 12),
    MESSAGE_STOP,
]
TOOL_EVENTS = [
    message_start(START_USAGE),
    block_start(0, {"type": "thinking", "thinking": ""}),
    delta(0, {"type": "thinking_delta", "thinking": "The user wants weather."}),
    delta(0, {"type": "signature_delta", "signature": "abc"}),
    block_stop(0),
    block_start(1, {"type": "text", "text": ""}),
    text_delta(1, "Let me check."),
    block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
    json_delta(2, ""),
    json_delta(2, '{"city": '),
    json_delta(2, '"Paris"}'),
    block_stop(2),
    block_start(3, {"type": "tool_use", "id": "toolu_b", "name": "now", "input": {}}),
    block_stop(3),
    message_delta("tool_use", 40),
    MESSAGE_STOP,
]


def run_stream(
    events: list[tuple[str, dict[str, Any]]], include_usage: bool
) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    """The upstream bytes through parse_sse and the translator, as the adapter will do it."""
    translator = StreamTranslator("claude-sonnet", "chatcmpl-9", 1_700_000_000, include_usage)
    buffer = bytearray(sse(events))
    chunks = []
    for name, data in parse_sse(buffer):
        chunks += translator.feed(name, orjson.loads(data))
    assert buffer == b""
    chunks += translator.finish()
    assert translator.finish() == []
    for chunk in chunks:
        parsed = ChatCompletionChunk.model_validate(chunk)
        assert not parsed.model_extra
        assert all(not choice.model_extra for choice in parsed.choices)
    return translator, chunks


def accumulate(chunks: list[dict[str, Any]]) -> Any:
    """What the openai SDK makes of the chunks: one chat completion."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
    return state.get_final_completion()


def deltas(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    return [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]
    ]


def test_a_text_stream_with_usage() -> None:
    translator, chunks = run_stream(TEXT_EVENTS, include_usage=True)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": ", world"}, None),
        ({}, "stop"),
    ]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    usage = {
        "prompt_tokens": 35,
        "completion_tokens": 12,
        "total_tokens": 47,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    assert chunks[-1] == {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "claude-sonnet",
        "choices": [],
        "usage": usage,
    }
    assert translator.usage == usage
    assert translator.completion_text_chars == len("Hello, world")
    assert translator.error is None
    completion = accumulate(chunks)
    assert completion.choices[0].message.content == "Hello, world"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 12


def test_a_text_stream_without_usage_has_no_usage_key() -> None:
    translator, chunks = run_stream(TEXT_EVENTS, include_usage=False)
    assert all("usage" not in chunk for chunk in chunks)
    assert deltas(chunks)[-1] == ({}, "stop")
    assert translator.usage is not None and translator.usage["completion_tokens"] == 12
    assert all(
        chunk["id"] == "chatcmpl-9" and chunk["model"] == "claude-sonnet" for chunk in chunks
    )


def test_a_stream_with_tool_use() -> None:
    translator, chunks = run_stream(TOOL_EVENTS, include_usage=True)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Let me check."}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}, None),
        (
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "toolu_b",
                        "type": "function",
                        "function": {"name": "now", "arguments": ""},
                    }
                ]
            },
            None,
        ),
        ({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, None),
        ({}, "tool_calls"),
    ]
    assert chunks[-1]["usage"]["completion_tokens"] == 40
    assert translator.completion_text_chars == len('Let me check.{"city": "Paris"}{}')
    message = accumulate(chunks).choices[0].message
    assert message.content == "Let me check."
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_a", "get_weather", '{"city": "Paris"}'),
        ("toolu_b", "now", "{}"),
    ]


def test_a_stream_without_upstream_usage_owes_no_usage_chunk() -> None:
    events = [message_start(), *TEXT_EVENTS[1:-2], message_delta("max_tokens", None), MESSAGE_STOP]
    translator, chunks = run_stream(events, include_usage=True)
    assert translator.usage is None
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert translator.completion_text_chars == len("Hello, world")


def test_later_usage_reports_replace_earlier_ones() -> None:
    translator = StreamTranslator("m", "id", 1, include_usage=True)
    translator.feed(*message_start({"input_tokens": 5, "output_tokens": 1}))
    translator.feed(*message_delta("end_turn", 3))
    # newer API versions repeat the input counts in message_delta, cumulatively
    late = {"output_tokens": 9, "input_tokens": 6, "cache_read_input_tokens": 2}
    translator.feed("message_delta", {"type": "message_delta", "delta": {}, "usage": late})
    assert translator.usage == {
        "prompt_tokens": 8,
        "completion_tokens": 9,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_an_error_event_is_kept_in_openai_shape() -> None:
    translator = StreamTranslator("m", "id", 1, include_usage=False)
    translator.feed(*message_start(START_USAGE))
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert translator.feed("error", overloaded) == []
    assert translator.error == {
        "error": {
            "message": "Overloaded",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }


def test_the_role_chunk_comes_first_even_without_message_start() -> None:
    translator = StreamTranslator("m", "id", 1, include_usage=False)
    chunks = translator.feed(*text_delta(0, "hi"))
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "hi"},
    ]


# --- server-sent events ------------------------------------------------------------------------


def test_parse_sse_reads_names_multiline_data_and_comments() -> None:
    buffer = bytearray(
        b": keep-alive\n\n"
        b'event: message_start\r\ndata: {"a":\r\ndata:1}\r\n\r\n'
        b"data: no name\n\n"
        b"event: lonely\n\n"
        b"id: 7\nevent: ping\ndata: {}\n\n"
        b'event: content_block_delta\ndata: {"par'
    )
    assert parse_sse(buffer) == [
        ("message_start", b'{"a":\n1}'),
        ("message", b"no name"),
        ("ping", b"{}"),
    ]
    assert buffer == b'event: content_block_delta\ndata: {"par'
    buffer += b'tial": true}\n\n'
    assert parse_sse(buffer) == [("content_block_delta", b'{"partial": true}')]
    assert buffer == b""


sse_lines = st.text(
    st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)
sse_events = st.lists(
    st.tuples(
        st.sampled_from(["message_start", "content_block_delta", "ping", "error"]),
        st.lists(sse_lines, min_size=1, max_size=3),
        st.booleans(),  # preceded by a comment
    ),
    max_size=6,
)


@given(events=sse_events, crlf=st.booleans(), cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_parse_sse_gives_the_same_events_however_the_bytes_are_split(
    events: list[tuple[str, list[str], bool]], crlf: bool, cuts: list[int]
) -> None:
    eol = "\r\n" if crlf else "\n"
    text = "".join(
        (f":comment{eol}" if comment else "")
        + f"event: {name}{eol}"
        + "".join(f"data: {line}{eol}" for line in lines)
        + eol
        for name, lines, comment in events
    )
    stream = text.encode()
    expected = [(name, "\n".join(lines).encode()) for name, lines, _ in events]
    points = sorted({min(cut, len(stream)) for cut in cuts})
    buffer, got, previous = bytearray(), [], 0
    for point in [*points, len(stream)]:
        buffer += stream[previous:point]
        previous = point
        got += parse_sse(buffer)
    assert got == expected
    assert buffer == b""


# --- errors -------------------------------------------------------------------------------------


def anthropic_error(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


@pytest.mark.parametrize(
    ("status", "kind", "expected_type", "expected_code"),
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "authentication_error", None),
        (403, "permission_error", "permission_error", None),
        (404, "not_found_error", "invalid_request_error", "not_found"),
        (413, "request_too_large", "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", "server_error", None),
        (529, "overloaded_error", "server_error", "overloaded"),
        (418, "brand_new_error", "upstream_error", None),
        (503, "brand_new_error", "server_error", None),
    ],
)
def test_anthropic_errors_become_openai_errors(
    status: int, kind: str, expected_type: str, expected_code: str | None
) -> None:
    assert anthropic_error_to_openai(status, anthropic_error(kind, "It went wrong.")) == {
        "error": {
            "message": "It went wrong.",
            "type": expected_type,
            "param": None,
            "code": expected_code,
        }
    }


def test_a_prompt_over_the_context_window_gets_openais_code() -> None:
    body = anthropic_error("invalid_request_error", "prompt is too long: 210000 tokens > 200000")
    assert anthropic_error_to_openai(400, body)["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("status", "body", "expected_type"),
    [
        (502, b"<html>Bad Gateway</html>", "server_error"),
        (429, b'{"detail": "slow down"}', "rate_limit_error"),
        (400, b"", "invalid_request_error"),
        (409, b"[1, 2]", "upstream_error"),
    ],
)
def test_an_error_body_not_from_anthropic_still_becomes_an_openai_error(
    status: int, body: bytes, expected_type: str
) -> None:
    error = anthropic_error_to_openai(status, body)["error"]
    assert error["type"] == expected_type
    assert str(status) in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
