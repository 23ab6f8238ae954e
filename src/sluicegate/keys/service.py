"""The rules of API keys: creation (the secret is shown once), listing, changes, rotation with an
optional grace period, deletion. Every change drops the key's cached context on every worker
after commit, so the proxy acts on it within a second."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.digests import display_prefix, new_secret, secret_digest
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.events import announce
from sluicegate.core.ids import new_id
from sluicegate.core.invalidation import KEY_TOPIC
from sluicegate.keys import repository
from sluicegate.keys.events import KeyCreated, KeyDisabled, KeyFacts
from sluicegate.keys.models import ApiKey
from sluicegate.orgs import membership_service
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    ADMIN,
    VIEWER,
    Action,
    KeyTarget,
    MemberTarget,
    OrgAccess,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.models import PATH_SEPARATOR

KEY_PREFIX = "sk-sg-"
# A rotated secret may keep working for at most a week, time enough to roll out the new one.
MAX_GRACE_PERIOD = timedelta(days=7)
MAX_ALLOWED_MODELS = 100


async def create_key(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    pepper: bytes,
    name: str,
    group_id: str,
    owner_user_id: str | None = None,
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new key in `group_id` owned by `owner_user_id` (the caller by default); returns the row
    and the secret, which is never shown again."""
    access = await orgs.load_access(session, actor, org_id)
    group = await orgs.group_of(session, access, group_id)
    owner_id = owner_user_id or actor.user_id
    owner = await membership_service.active_member_target(session, org_id, owner_id)
    if owner is None:
        raise NotFound(
            f"owner_user_id: user {owner_id} is not a member of this organization",
            details={"field": "owner_user_id"},
        )
    authorize(access, Action.KEY_CREATE, KeyTarget(orgs.path_of(group), owner))
    label = orgs.clean_name(name)
    _check_expiry(expires_at, now)
    secret = new_secret(KEY_PREFIX)
    key = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        group_id=group.id,
        owner_user_id=owner_id,
        name=label,
        prefix=display_prefix(secret),
        digest=secret_digest(pepper, secret),
        allowed_models=_check_models(allowed_models),
        expires_at=expires_at,
        created_at=now,
    )
    await repository.add(session, key)
    await _record(session, actor, key, "key.create", after=key_view(key))
    await announce(session, KeyCreated(KeyFacts.of(key), actor, now))
    return key, secret


async def get_key(session: AsyncSession, actor: Actor, org_id: str, key_id: str) -> ApiKey:
    access = await orgs.load_access(session, actor, org_id)
    key, target = await _key_and_target(session, access, key_id)
    authorize(access, Action.KEY_READ, target)
    return key


async def list_keys(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    group_id: str | None,
    owner_user_id: str | None,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[ApiKey], str | None]:
    """The caller's own keys and the keys of the subtrees they administer or view (all keys, for
    owners). Revoked keys only when asked for with status=revoked. `group_id` narrows to the keys
    of that group's subtree."""
    access = await orgs.load_access(session, actor, org_id)
    group_subtree = None
    if group_id is not None:
        group_subtree = (await orgs.group_of(session, access, group_id)).path
    subtrees = readable_subtrees(access, ADMIN, VIEWER)
    return await repository.list_keys(
        session,
        org_id,
        subtrees=None if subtrees is None else [PATH_SEPARATOR.join(p) for p in subtrees],
        also_owner=actor.user_id,
        group_subtree=group_subtree,
        owner_user_id=owner_user_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )


async def update_key(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    key_id: str,
    changes: dict[str, Any],
    now: datetime,
) -> ApiKey:
    """Change `name`, `status` (active|disabled), `allowed_models` (None: every model) or
    `expires_at` (None: never). Only the fields present in `changes` change."""
    access = await orgs.load_access(session, actor, org_id)
    key, target = await _key_and_target(session, access, key_id)
    authorize(access, Action.KEY_MANAGE, target)
    _not_revoked(key)
    before = key_view(key)
    if changes.get("name") is not None:
        key.name = orgs.clean_name(changes["name"])
    was_active = key.status == "active"
    if changes.get("status") is not None:
        status = changes["status"]
        if status not in ("active", "disabled"):
            raise InvalidInput(
                "status: must be 'active' or 'disabled'", details={"field": "status"}
            )
        if status == "active" and key.status != "active":
            await _may_reactivate(session, key)
        key.status = status
    if "allowed_models" in changes:
        key.allowed_models = _check_models(changes["allowed_models"])
    if "expires_at" in changes:
        _check_expiry(changes["expires_at"], now)
        key.expires_at = changes["expires_at"]
    await session.flush()
    invalidate_after_commit(session, KEY_TOPIC, key.id)
    await _record(session, actor, key, "key.update", before=before, after=key_view(key))
    if was_active and key.status == "disabled":
        await announce(session, KeyDisabled(KeyFacts.of(key), actor, now))
    return key


async def rotate_key(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    key_id: str,
    *,
    pepper: bytes,
    grace_period: timedelta = timedelta(0),
    now: datetime,
) -> tuple[ApiKey, str]:
    """A new secret for the key. The old one stops at once, or after `grace_period`; a secret
    still in an earlier grace period stops at once."""
    access = await orgs.load_access(session, actor, org_id)
    key, target = await _key_and_target(session, access, key_id)
    authorize(access, Action.KEY_MANAGE, target)
    _not_revoked(key)
    if not timedelta(0) <= grace_period <= MAX_GRACE_PERIOD:
        raise InvalidInput(
            f"grace_period_seconds: must be 0 to {int(MAX_GRACE_PERIOD.total_seconds())}",
            details={"field": "grace_period_seconds"},
        )
    secret = new_secret(KEY_PREFIX)
    if grace_period:
        key.previous_digest, key.previous_expires_at = key.digest, now + grace_period
    else:
        key.previous_digest, key.previous_expires_at = None, None
    # The old digest must leave the unique column before the new one takes it.
    key.digest = secret_digest(pepper, secret)
    key.prefix = display_prefix(secret)
    await session.flush()
    invalidate_after_commit(session, KEY_TOPIC, key.id)
    await _record(
        session,
        actor,
        key,
        "key.rotate",
        after={
            "prefix": key.prefix,
            "previous_expires_at": _iso(key.previous_expires_at),
        },
    )
    return key, secret


async def delete_key(
    session: AsyncSession, actor: Actor, org_id: str, key_id: str, now: datetime
) -> None:
    """Revoke the key for good; it stays readable (status revoked) for the usage it names."""
    access = await orgs.load_access(session, actor, org_id)
    key, target = await _key_and_target(session, access, key_id)
    authorize(access, Action.KEY_MANAGE, target)
    if key.status == "revoked":
        return
    before = key_view(key)
    key.status, key.revoked_at = "revoked", now
    key.previous_digest, key.previous_expires_at = None, None
    await session.flush()
    invalidate_after_commit(session, KEY_TOPIC, key.id)
    await _record(session, actor, key, "key.delete", before=before, after={"status": "revoked"})


# --- helpers ---------------------------------------------------------------------------------


def key_view(key: ApiKey) -> dict[str, Any]:
    """What the audit trail keeps of a key: never its secret or digest."""
    return {
        "name": key.name,
        "prefix": key.prefix,
        "group_id": key.group_id,
        "owner_user_id": key.owner_user_id,
        "status": key.status,
        "allowed_models": key.allowed_models,
        "expires_at": _iso(key.expires_at),
    }


async def key_and_target(
    session: AsyncSession, access: OrgAccess, key_id: str
) -> tuple[ApiKey, KeyTarget]:
    """A key of the caller's org (revoked ones included) and the target the rules judge: for
    other capabilities that govern keys (budgets, policies). 404 for unknown ids."""
    return await _key_and_target(session, access, key_id)


async def _key_and_target(
    session: AsyncSession, access: OrgAccess, key_id: str
) -> tuple[ApiKey, KeyTarget]:
    key = await repository.key_in_org(session, access.org_id, key_id)
    if key is None:
        raise NotFound(f"key {key_id} not found")
    groups = await orgs.groups_of(session, access, [key.group_id])
    node = orgs.path_of(groups[key.group_id])
    owner = await membership_service.member_target(session, access.org_id, key.owner_user_id)
    return key, KeyTarget(node, owner or MemberTarget(key.owner_user_id, node, ()))


async def _may_reactivate(session: AsyncSession, key: ApiKey) -> None:
    owner = await membership_service.active_member_target(session, key.org_id, key.owner_user_id)
    if owner is None:
        raise Conflict("status: the key's owner is no longer a member; the key stays disabled")
    if not await orgs.group_is_live(session, key.org_id, key.group_id):
        raise Conflict("status: the key's group was deleted; the key stays disabled")


def _not_revoked(key: ApiKey) -> None:
    if key.status == "revoked":
        raise Conflict(f"key {key.id} was deleted; create a new key instead")


def _check_expiry(expires_at: datetime | None, now: datetime) -> None:
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at: must be in the future", details={"field": "expires_at"})


def _check_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    if len(models) > MAX_ALLOWED_MODELS or not all(
        isinstance(m, str) and 0 < len(m) <= 200 and m.isprintable() for m in models
    ):
        raise InvalidInput(
            f"allowed_models: a list of at most {MAX_ALLOWED_MODELS} model ids or glob patterns "
            "(e.g. 'gpt-4o-*')",
            details={"field": "allowed_models"},
        )
    return list(dict.fromkeys(models))


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def _record(
    session: AsyncSession,
    actor: Actor,
    key: ApiKey,
    action: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    await record_action(
        session,
        actor,
        org_id=key.org_id,
        action=action,
        target_type="api_key",
        target_id=key.id,
        group_id=key.group_id,
        before=before,
        after=after,
    )
