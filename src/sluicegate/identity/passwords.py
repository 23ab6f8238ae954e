"""Password hashing with argon2id (argon2-cffi's recommended parameters). Hashing takes tens of
milliseconds of CPU on purpose, so it runs in a thread and never stalls the event loop."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from sluicegate.core.errors import InvalidInput

MIN_PASSWORD_LENGTH = 8  # NIST SP 800-63B's floor; length beats composition rules
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when no account matches, so a wrong email costs as long as a wrong
    password. Made on first use: hashing takes a third of a second, too much for every process
    start (workers, CLI commands)."""
    return _hasher.hash("no account has this password")


def check_password_rules(password: str, field: str = "password") -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"{field}: must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            details={"field": field},
        )


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; constant work whether or not there is a hash."""
    return await asyncio.to_thread(_verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        _hasher.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return password_hash is not None
