"""Cursors round-trip any key, and refuse anything they did not produce."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.errors import InvalidInput
from sluicegate.core.pagination import decode_cursor, encode_cursor

# Keys are ids and names from the database: any text but NUL and lone surrogates.
keys = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@given(keys)
def test_a_string_key_round_trips(key: str) -> None:
    assert decode_cursor(encode_cursor(key), str) == key


@given(st.integers(-(2**63) + 1, 2**63 - 1))
def test_an_integer_key_round_trips(key: int) -> None:
    assert decode_cursor(encode_cursor(key), int) == key


@given(st.text(max_size=60))
def test_anything_else_is_refused_or_decodes_to_the_right_type(cursor: str) -> None:
    try:
        value = decode_cursor(cursor, int)
    except InvalidInput as exc:
        assert exc.details == {"field": "cursor"}
    else:
        assert value is None or type(value) is int


def test_a_key_of_the_other_type_is_refused() -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor("grp_x"), int)
    with pytest.raises(InvalidInput):
        decode_cursor(encode_cursor(7), str)
