"""The signature of generic webhook deliveries, and how a receiver checks it.

Each delivery carries two headers:

    X-Sluicegate-Timestamp: 1764892800
    X-Sluicegate-Signature: v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

The signature is HMAC-SHA256, keyed with the channel's signing secret, over the timestamp, a
dot and the raw request body (`b"1764892800." + body`), in hex. A receiver recomputes it over
the body exactly as received (before parsing JSON), compares in constant time, and refuses a
timestamp more than five minutes from its own clock, so a captured delivery cannot be replayed
later. While a secret is being rotated the header holds one `v1=` entry per secret, separated
by commas; any one matching is enough. `verify` below is that check, usable as the reference.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

TIMESTAMP_HEADER = "X-Sluicegate-Timestamp"
SIGNATURE_HEADER = "X-Sluicegate-Signature"
SCHEME = "v1"
REPLAY_WINDOW_SECONDS = 300
SECRET_PREFIX = "whsec_"  # noqa: S105 - a marker, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secrets_: list[str] | tuple[str, ...], timestamp: int, body: bytes) -> dict[str, str]:
    """The two headers of a delivery, signed with every given secret (the current one first)."""
    if not secrets_:
        raise ValueError("at least one signing secret is needed")
    value = ",".join(f"{SCHEME}={_digest(s, timestamp, body)}" for s in secrets_)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: value}


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    window: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """Whether a delivery is genuine and fresh: the header values as received, the raw body,
    the receiver's clock (Unix seconds)."""
    if not timestamp or not signature:
        return False
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > window:
        return False
    expected = _digest(secret, sent, body)
    found = False
    for entry in signature.split(","):
        scheme, _, value = entry.strip().partition("=")
        # Every entry is compared, so the time taken says nothing about which one matched.
        found |= scheme == SCHEME and hmac.compare_digest(value, expected)
    return found
