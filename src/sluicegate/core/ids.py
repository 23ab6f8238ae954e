"""Prefixed, time-ordered identifiers: `org_01jd4...` sorts by creation time, so ids are cursors."""

from __future__ import annotations

import os
import time

# Crockford base32: no I, L, O, U, so ids read aloud and copy-paste safely.
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_ALPHABET_SET = frozenset(_ALPHABET)
_RANDOM_BITS = 80
_TIME_BITS = 48
_ENCODED_LENGTH = 26  # ceil((48 + 80) / 5)


def new_id(prefix: str) -> str:
    """A new id such as `usr_01jd4k...`: 48 bits of milliseconds, then 80 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis << _RANDOM_BITS) | int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    chars = []
    for _ in range(_ENCODED_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` looks like an id made by `new_id(prefix)`."""
    head, sep, body = value.partition("_")
    return (
        sep == "_"
        and head == prefix
        and len(body) == _ENCODED_LENGTH
        and all(char in _ALPHABET_SET for char in body)
    )
