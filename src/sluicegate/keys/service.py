"""The rules of API keys: creation (the secret is shown once), status changes, invalidation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.digests import display_prefix, new_secret, secret_digest
from sluicegate.core.errors import InvalidInput, NotFound
from sluicegate.core.ids import new_id
from sluicegate.keys import repository
from sluicegate.keys.lookup import KEY_TOPIC
from sluicegate.keys.models import ApiKey
from sluicegate.orgs import repository as orgs_repository

KEY_PREFIX = "sk-sg-"


async def create_key(
    session: AsyncSession,
    *,
    pepper: bytes,
    org_id: str,
    group_id: str,
    owner_user_id: str,
    name: str,
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key in `group_id` owned by a member of the org; returns the row and the secret."""
    if await orgs_repository.group_in_org(session, org_id, group_id) is None:
        raise NotFound(f"group {group_id} not found", details={"field": "group_id"})
    member = await orgs_repository.membership(session, org_id, owner_user_id)
    if member is None or member.status != "active":
        raise NotFound(
            f"user {owner_user_id} is not a member of this organization",
            details={"field": "owner_user_id"},
        )
    label = name.strip()
    if not label or len(label) > 200:
        raise InvalidInput("name must be 1 to 200 characters", details={"field": "name"})
    if allowed_models is not None and not all(isinstance(m, str) and m for m in allowed_models):
        raise InvalidInput(
            "allowed_models must be a list of model ids or patterns",
            details={"field": "allowed_models"},
        )
    secret = new_secret(KEY_PREFIX)
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        group_id=group_id,
        owner_user_id=owner_user_id,
        name=label,
        prefix=display_prefix(secret),
        digest=secret_digest(pepper, secret),
        allowed_models=allowed_models,
        expires_at=expires_at,
    )
    await repository.add(session, key)
    return key, secret


async def set_key_status(session: AsyncSession, *, org_id: str, key_id: str, status: str) -> ApiKey:
    """Enable or disable a key; every worker's cached context for it is dropped after commit."""
    if status not in ("active", "disabled"):
        raise InvalidInput("status must be 'active' or 'disabled'", details={"field": "status"})
    key = await repository.key_in_org(session, org_id, key_id)
    if key is None or key.status == "revoked":
        raise NotFound(f"key {key_id} not found")
    key.status = status
    await session.flush()
    invalidate_after_commit(session, KEY_TOPIC, key.id)
    return key
