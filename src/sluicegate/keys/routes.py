"""HTTP routes of API keys under /api/v1/orgs/{org_id}/keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from sluicegate.api.deps import DEFAULT_PAGE, CurrentSettings, Cursor, DbSession, Limit, Now
from sluicegate.api.errors import CONFLICT, STANDARD_ERRORS
from sluicegate.api.fields import Id
from sluicegate.api.pages import Page
from sluicegate.identity.dependencies import CurrentActor
from sluicegate.keys import service
from sluicegate.keys.schemas import KeyCreate, KeyCreated, KeyOut, KeyRotate, KeyUpdate

router = APIRouter(prefix="/orgs/{org_id}/keys", tags=["keys"], responses=STANDARD_ERRORS)
FilterId = Annotated[Id | None, Query()]


@router.post("", status_code=201)
async def create_key(
    org_id: str,
    body: KeyCreate,
    session: DbSession,
    actor: CurrentActor,
    settings: CurrentSettings,
    now: Now,
) -> KeyCreated:
    """A new API key (`sk-sg-...`). Members create their own, in groups where they hold a role;
    admins create keys for the members they manage. The secret is shown only here."""
    key, secret = await service.create_key(
        session,
        actor,
        org_id,
        pepper=settings.secret,
        name=body.name,
        group_id=body.group_id,
        owner_user_id=body.owner_user_id,
        allowed_models=body.allowed_models,
        expires_at=body.expires_at,
        now=now,
    )
    return KeyCreated(**KeyOut.model_validate(key).model_dump(), key=secret)


@router.get("")
async def list_keys(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    group_id: FilterId = None,
    owner_user_id: FilterId = None,
    status: Literal["active", "disabled", "revoked"] | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[KeyOut]:
    """Your keys and those of the subtrees you administer or view; deleted keys only with
    status=revoked. Never a secret."""
    keys, next_cursor = await service.list_keys(
        session,
        actor,
        org_id,
        group_id=group_id,
        owner_user_id=owner_user_id,
        status=status,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[KeyOut.model_validate(k) for k in keys], next_cursor=next_cursor)


@router.get("/{key_id}")
async def get_key(org_id: str, key_id: str, session: DbSession, actor: CurrentActor) -> KeyOut:
    return KeyOut.model_validate(await service.get_key(session, actor, org_id, key_id))


@router.patch("/{key_id}", responses=CONFLICT)
async def update_key(
    org_id: str, key_id: str, body: KeyUpdate, session: DbSession, actor: CurrentActor, now: Now
) -> KeyOut:
    """Change name, status (active|disabled), allowed_models (null: every model) or expires_at
    (null: never). The proxy sees the change within a second on every worker."""
    changes = body.model_dump(exclude_unset=True)
    return KeyOut.model_validate(
        await service.update_key(session, actor, org_id, key_id, changes, now)
    )


@router.post("/{key_id}/rotate", responses=CONFLICT)
async def rotate_key(
    org_id: str,
    key_id: str,
    session: DbSession,
    actor: CurrentActor,
    settings: CurrentSettings,
    now: Now,
    body: KeyRotate | None = None,
) -> KeyCreated:
    """A new secret, shown only here. The old one stops at once, or after
    grace_period_seconds."""
    grace = timedelta(seconds=body.grace_period_seconds if body else 0)
    key, secret = await service.rotate_key(
        session, actor, org_id, key_id, pepper=settings.secret, grace_period=grace, now=now
    )
    return KeyCreated(
        **KeyOut.model_validate(key).model_dump(),
        key=secret,
        previous_key_expires_at=key.previous_expires_at,
    )


@router.delete("/{key_id}", status_code=204)
async def delete_key(
    org_id: str, key_id: str, session: DbSession, actor: CurrentActor, now: Now
) -> Response:
    """Delete (revoke) the key for good; it stays listed with status=revoked."""
    await service.delete_key(session, actor, org_id, key_id, now)
    return Response(status_code=204)
