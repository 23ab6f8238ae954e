"""A filter of several values (api/fields.py ValueList) reads a comma list, repeated parameters
or both the same way: each value once, in the order first given, surrounding spaces dropped, and
refuses none or too many."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from sluicegate.api.fields import LISTED_TEXT_LENGTH, MAX_LISTED_VALUES, ValueList

LISTS: TypeAdapter[list[str]] = TypeAdapter(ValueList)
VALUE = (
    st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=","), min_size=1)
    .map(str.strip)
    .filter(bool)
)


@given(st.lists(VALUE, min_size=1, max_size=MAX_LISTED_VALUES, unique=True), st.data())
def test_a_comma_list_and_repeats_read_the_same(values: list[str], data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(values)))
    forms = [
        values,  # repeated
        values + values[: MAX_LISTED_VALUES - len(values)],  # some twice
        [", ".join(f" {value}" for value in values[:cut]), *values[cut:]],  # mixed, spaced
    ]
    forms.append([",".join(values)])  # one comma list
    for given_as in forms:
        if all(len(text) <= LISTED_TEXT_LENGTH for text in given_as):
            assert LISTS.validate_python(given_as) == values, given_as


def test_none_or_too_many_values_are_refused() -> None:
    for given_as in ([""], [" , ,"], [",".join(f"v{n}" for n in range(MAX_LISTED_VALUES + 1))]):
        with pytest.raises(ValidationError):
            LISTS.validate_python(given_as)
    assert LISTS.validate_python(["a,b", "b", " c ,a"]) == ["a", "b", "c"]
