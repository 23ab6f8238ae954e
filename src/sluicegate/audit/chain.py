"""The hash chain: each event's hash links the previous one with the canonical JSON of its fields.

Two versions of the link, recorded per event (`hash_version`):
- 1, unkeyed: SHA-256(previous hash || canonical JSON). Events written before keyed links
  existed; anyone who can write the database can recompute them after an edit.
- 2, keyed: HMAC-SHA256(audit key, previous hash || canonical JSON), the key derived from
  SLUICEGATE_SECRET_KEY, which the database never holds: an edit cannot be re-linked.
The chain's head (its last seq and hash) is sealed the same way (`head_mac`), so it cannot be
moved to a state it was never in either. What a database-only attacker can still do, and how
checkpoints kept outside the database catch it, is in audit/checkpoints.py and in
docs/operations.md ("Faults").

Canonical JSON is orjson with sorted keys; timestamps are RFC 3339 UTC with microseconds, so
the same event always hashes the same on Postgres and SQLite.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson

from sluicegate.core.sealing import derive_key

UNKEYED = 1
KEYED = 2
KEY_PURPOSE = "sluicegate audit chain v2"
# Where a session carries the audit key (set by the runtime's session factory): services append
# to the trail through whatever session their request has, and never see the secret itself.
SESSION_KEY = "sluicegate.audit_key"

# The link before the first event of every org.
GENESIS_HASH = "0" * 64
# Field names whose values never enter the trail, at any depth of before/after.
SECRET_FIELDS = frozenset(
    {"key", "secret", "password", "password_hash", "token", "digest", "api_key", "new_key"}
)
REDACTED = "[redacted]"

HASHED_FIELDS = (
    "id",
    "org_id",
    "seq",
    "created_at",
    "actor_user_id",
    "action",
    "target_type",
    "target_id",
    "before",
    "after",
    "ip",
    "user_agent",
    "request_id",
)
# Hashed only when set, so events written before the field existed still verify.
OPTIONAL_HASHED_FIELDS = ("group_id",)


def redact(value: Any) -> Any:
    """A copy of `value` with every secret-named field replaced by a marker."""
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(fields: dict[str, Any]) -> bytes:
    document = {name: fields[name] for name in HASHED_FIELDS}
    for name in OPTIONAL_HASHED_FIELDS:
        if fields.get(name) is not None:
            document[name] = fields[name]
    document["created_at"] = _timestamp(document["created_at"])
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def audit_key(secret: bytes) -> bytes:
    """The key of keyed links and head seals, derived from SLUICEGATE_SECRET_KEY."""
    return derive_key(secret, KEY_PURPOSE)


def link_hash(
    prev_hash: str, fields: dict[str, Any], version: int = UNKEYED, key: bytes | None = None
) -> str:
    message = bytes.fromhex(prev_hash) + canonical(fields)
    if version == UNKEYED:
        return hashlib.sha256(message).hexdigest()
    if version != KEYED or key is None:
        raise ValueError(f"audit link version {version} needs the audit key")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def head_mac(key: bytes, chain: str, seq: int, last_hash: str) -> str:
    """The seal of a chain's head. (Migration 0008 seals existing heads with the same formula.)"""
    return hmac.new(key, f"{chain}:{seq}:{last_hash}".encode(), hashlib.sha256).hexdigest()
