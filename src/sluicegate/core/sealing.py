"""Secrets the database must hold but never show (alert channels' webhook URLs and signing
secrets), encrypted with AES-256-GCM under a key derived from SLUICEGATE_SECRET_KEY.

A sealed value is `v1.<urlsafe base64 of nonce || ciphertext+tag>`. Each purpose derives its own
key (HKDF-SHA256, the purpose as `info`), and the caller binds a sealed value to its row with
`context` (authenticated, not stored): a value copied into another org's row does not open.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
NONCE_BYTES = 12  # GCM's standard nonce; random per value (2^32 values per key stay safe)


class SealBroken(ValueError):
    """The value was not sealed by this key for this context (changed key, tampered row)."""


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key of its own for each purpose (HKDF-SHA256 of the secret, `purpose` as info):
    a key learnt through one use tells nothing of the others."""
    key: bytes = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()
    ).derive(secret)
    return key


class SecretBox:
    def __init__(self, secret: bytes, purpose: str) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context.encode())
        return f"{VERSION}.{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, token: str, context: str) -> bytes:
        version, _, body = token.partition(".")
        if version != VERSION or not body:
            raise SealBroken("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(body)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealBroken("the value does not open with this key and context") from exc
