"""Whatever a client sends, the gateway answers in OpenAI's shape and never with a 500."""

from __future__ import annotations

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import Tenant
from tests.support import ServerProcess

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]) | st.text()},
        optional={
            "content": json_values,
            "tool_calls": json_values,
            "tool_call_id": json_values,
            "name": json_values,
        },
    )
    | json_values,
    max_size=4,
)
plausible_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small"])
        | st.text(max_size=20),
        "messages": messages | json_values,
    },
    optional={
        "stream": st.booleans() | json_values,
        "max_tokens": st.integers(-5, 40) | json_values,
        "n": st.integers(-1, 3) | json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "stop": json_values,
        "response_format": json_values,
        "stream_options": json_values,
        "temperature": json_values,
    },
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    plausible_bodies.map(orjson.dumps),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def _check(response: httpx.Response) -> None:
    assert response.status_code != 500, response.text
    assert response.status_code < 500 or response.status_code in (502, 504), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=raw_bodies)
def test_random_bodies_never_cause_a_server_error(
    gateway: ServerProcess, tenant: Tenant, path: str, raw: bytes
) -> None:
    response = httpx.post(
        gateway.base_url + path,
        content=raw,
        headers={"authorization": f"Bearer {tenant.key}", "content-type": "application/json"},
        timeout=30,
    )
    _check(response)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        + b"x" * 2_000_000
        + b'"}]}',
        b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}], "n": '
        + b"9" * 400
        + b"}",
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a"}], "x": '
        + b"[" * 300
        + b"]" * 300
        + b"}",
        b'{"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "a"}], '
        b'"tools": [{"type": "function", "function": {"name": "f", "parameters": '
        + b'{"a":' * 300
        + b"1"
        + b"}" * 300
        + b"}}]}",
    ],
    ids=[
        "huge-string",
        "deep-nesting",
        "invalid-utf8",
        "huge-number",
        "deep-extra-field",
        "deep-anthropic-tools",
    ],
)
def test_pathological_bodies(gateway: ServerProcess, tenant: Tenant, raw: bytes) -> None:
    response = httpx.post(
        gateway.base_url + "/v1/chat/completions",
        content=raw,
        headers={"authorization": f"Bearer {tenant.key}", "content-type": "application/json"},
        timeout=60,
    )
    _check(response)
