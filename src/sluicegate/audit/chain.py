"""The hash chain: hash = SHA-256(previous hash || canonical JSON of the event's fields).

Canonical JSON is orjson with sorted keys; timestamps are RFC 3339 UTC with microseconds, so
the same event always hashes the same on Postgres and SQLite.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

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


def link_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical(fields)).hexdigest()
