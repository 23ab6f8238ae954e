"""Sealed secrets open only with the same key and context, and never show their plaintext."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.core.sealing import SealBroken, SecretBox

BOX = SecretBox(b"k" * 48, "test")


@given(st.binary(max_size=2000), st.text(max_size=60))
def test_round_trip(plaintext: bytes, context: str) -> None:
    token = BOX.seal(plaintext, context)
    assert BOX.open(token, context) == plaintext
    if len(plaintext) >= 8:
        assert plaintext not in token.encode()


def test_two_seals_of_one_value_differ() -> None:
    assert BOX.seal(b"same", "c") != BOX.seal(b"same", "c")


@pytest.mark.parametrize(
    ("box", "context"),
    [
        (SecretBox(b"other" * 10, "test"), "org_a"),  # another instance key
        (SecretBox(b"k" * 48, "other purpose"), "org_a"),  # another purpose
        (BOX, "org_b"),  # copied into another org's row
    ],
)
def test_it_does_not_open_elsewhere(box: SecretBox, context: str) -> None:
    token = BOX.seal(b"https://hooks.slack.com/services/T/B/x", "org_a")
    with pytest.raises(SealBroken):
        box.open(token, context)


@given(st.integers(min_value=0, max_value=60), st.integers(min_value=1, max_value=255))
def test_a_changed_byte_is_refused(position: int, flip: int) -> None:
    token = BOX.seal(b"secret value", "ctx")
    prefix, body = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[position % len(raw)] ^= flip
    tampered = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(SealBroken):
        BOX.open(tampered, "ctx")


@pytest.mark.parametrize("token", ["", "v1.", "v2.AAAA", "plain text", "v1.!!!"])
def test_garbage_is_refused(token: str) -> None:
    with pytest.raises(SealBroken):
        BOX.open(token, "ctx")
