"""Digests of bearer secrets (API keys, admin tokens): HMAC-SHA256 peppered by the secret key.

Only digests are stored, so a database dump yields no usable secret; the pepper lives outside
the database, so a dump alone cannot even be brute-forced offline.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# 32 random bytes: 256 bits, far beyond guessing.
SECRET_BYTES = 32
# Lists show this many leading characters so people can tell their secrets apart.
DISPLAY_PREFIX_LENGTH = 12


def secret_digest(pepper: bytes, secret: str) -> str:
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def new_secret(prefix: str) -> str:
    """A new bearer secret such as `sk-sg-...`: a recognisable prefix, then 43 url-safe chars."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LENGTH]
