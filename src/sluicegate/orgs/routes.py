"""HTTP routes of organizations, groups, members, role bindings and invitations."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from sluicegate.api.deps import DEFAULT_PAGE, CurrentSettings, Cursor, DbSession, Limit, Meta, Now
from sluicegate.api.errors import CONFLICT, INVALID, NOT_FOUND, STANDARD_ERRORS, UNAUTHENTICATED
from sluicegate.api.fields import Id
from sluicegate.api.pages import Page
from sluicegate.identity.dependencies import CurrentActor, OptionalActor
from sluicegate.orgs import group_service, invitation_service, membership_service, service
from sluicegate.orgs.schemas import (
    GroupCreate,
    GroupDeleted,
    GroupOut,
    GroupUpdate,
    InvitationAccept,
    InvitationAccepted,
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    MemberOut,
    MemberUpdate,
    OrgCreate,
    OrgOut,
    OrgUpdate,
    RoleSet,
)

router = APIRouter(responses=STANDARD_ERRORS)
ORG = "/orgs/{org_id}"
FilterId = Annotated[Id | None, Query()]


# --- organizations ----------------------------------------------------------------------------


@router.post("/orgs", status_code=201, tags=["organizations"])
async def create_org(body: OrgCreate, session: DbSession, actor: CurrentActor) -> OrgOut:
    """A new organization; you become its owner."""
    org = await service.create_organization(session, actor, name=body.name, timezone=body.timezone)
    root = await service.root_group_ids(session, [org.id])
    return OrgOut.of(org, root[org.id])


@router.get("/orgs", tags=["organizations"])
async def list_orgs(
    session: DbSession, actor: CurrentActor, cursor: Cursor = None, limit: Limit = DEFAULT_PAGE
) -> Page[OrgOut]:
    """The organizations you are a member of."""
    orgs, next_cursor = await service.list_organizations(session, actor, cursor=cursor, limit=limit)
    roots = await service.root_group_ids(session, [org.id for org in orgs])
    return Page(items=[OrgOut.of(org, roots[org.id]) for org in orgs], next_cursor=next_cursor)


@router.get(ORG, tags=["organizations"])
async def get_org(org_id: str, session: DbSession, actor: CurrentActor) -> OrgOut:
    org = await service.get_organization(session, actor, org_id)
    return OrgOut.of(org, (await service.root_group_ids(session, [org.id]))[org.id])


@router.patch(ORG, tags=["organizations"])
async def update_org(
    org_id: str, body: OrgUpdate, session: DbSession, actor: CurrentActor
) -> OrgOut:
    """Owners: change the name and settings. Fields left out keep their value."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    org = await service.update_organization(session, actor, org_id, changes)
    return OrgOut.of(org, (await service.root_group_ids(session, [org.id]))[org.id])


@router.delete(ORG, status_code=204, tags=["organizations"])
async def delete_org(org_id: str, session: DbSession, actor: CurrentActor, now: Now) -> Response:
    """Owners: delete the organization. Every one of its API keys stops at once."""
    await service.delete_organization(session, actor, org_id, now)
    return Response(status_code=204)


# --- groups -----------------------------------------------------------------------------------


@router.post(f"{ORG}/groups", status_code=201, tags=["groups"], responses=CONFLICT)
async def create_group(
    org_id: str, body: GroupCreate, session: DbSession, actor: CurrentActor
) -> GroupOut:
    """A group under `parent_id` (the root when absent), no deeper than the org's max_level."""
    group = await group_service.create_group(
        session, actor, org_id, name=body.name, parent_id=body.parent_id
    )
    return GroupOut.of(group)


@router.get(f"{ORG}/groups", tags=["groups"])
async def list_groups(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    parent_id: FilterId = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[GroupOut]:
    """The groups of the subtrees where you hold a role (every group, for owners)."""
    groups, next_cursor = await group_service.list_groups(
        session, actor, org_id, parent_id=parent_id, cursor=cursor, limit=limit
    )
    return Page(items=[GroupOut.of(g) for g in groups], next_cursor=next_cursor)


@router.get(f"{ORG}/groups/{{group_id}}", tags=["groups"])
async def get_group(
    org_id: str, group_id: str, session: DbSession, actor: CurrentActor
) -> GroupOut:
    return GroupOut.of(await group_service.get_group(session, actor, org_id, group_id))


@router.patch(f"{ORG}/groups/{{group_id}}", tags=["groups"], responses=CONFLICT)
async def update_group(
    org_id: str, group_id: str, body: GroupUpdate, session: DbSession, actor: CurrentActor
) -> GroupOut:
    """Rename, or move under another parent (the subtree moves along)."""
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return GroupOut.of(await group_service.update_group(session, actor, org_id, group_id, changes))


@router.delete(f"{ORG}/groups/{{group_id}}", tags=["groups"], responses=CONFLICT)
async def delete_group(
    org_id: str,
    group_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    disable_keys: Annotated[
        bool, Query(description="disable the group's keys and delete it anyway")
    ] = False,
) -> GroupDeleted:
    """Delete an empty group (no subgroups, members or keys), or one with keys when
    disable_keys=true, which disables them."""
    disabled = await group_service.delete_group(
        session, actor, org_id, group_id, disable_keys=disable_keys, now=now
    )
    return GroupDeleted(disabled_key_ids=disabled)


# --- members ----------------------------------------------------------------------------------


@router.get(f"{ORG}/members", tags=["members"])
async def list_members(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    group_id: FilterId = None,
    status: Literal["active", "removed"] | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[MemberOut]:
    """Members homed where you administer or view (everyone, for owners), and yourself, with
    their roles, home group and key count. `group_id`: homed in that group's subtree."""
    views, next_cursor = await membership_service.list_members(
        session, actor, org_id, group_id=group_id, status=status, cursor=cursor, limit=limit
    )
    return Page(items=[MemberOut.of(v) for v in views], next_cursor=next_cursor)


@router.get(f"{ORG}/members/{{user_id}}", tags=["members"])
async def get_member(
    org_id: str, user_id: str, session: DbSession, actor: CurrentActor
) -> MemberOut:
    return MemberOut.of(await membership_service.get_member(session, actor, org_id, user_id))


@router.patch(f"{ORG}/members/{{user_id}}", tags=["members"])
async def update_member(
    org_id: str, user_id: str, body: MemberUpdate, session: DbSession, actor: CurrentActor
) -> MemberOut:
    """Change the member's home group (where their spend is attributed)."""
    view = await membership_service.change_home_group(
        session, actor, org_id, user_id, body.home_group_id
    )
    return MemberOut.of(view)


@router.delete(f"{ORG}/members/{{user_id}}", status_code=204, tags=["members"], responses=CONFLICT)
async def remove_member(
    org_id: str, user_id: str, session: DbSession, actor: CurrentActor, now: Now
) -> Response:
    """Remove a member (or leave, with your own id): their roles end and their keys are disabled;
    their usage history stays."""
    await membership_service.remove_member(session, actor, org_id, user_id, now)
    return Response(status_code=204)


@router.put(f"{ORG}/members/{{user_id}}/roles", tags=["members"], responses=CONFLICT)
async def set_role(
    org_id: str, user_id: str, body: RoleSet, session: DbSession, actor: CurrentActor
) -> MemberOut:
    """Bind a role to the member at a group, replacing the role they held there."""
    view = await membership_service.set_role(
        session, actor, org_id, user_id, group_id=body.group_id, role=body.role
    )
    return MemberOut.of(view)


@router.delete(
    f"{ORG}/members/{{user_id}}/roles/{{group_id}}", tags=["members"], responses=CONFLICT
)
async def remove_role(
    org_id: str, user_id: str, group_id: str, session: DbSession, actor: CurrentActor
) -> MemberOut:
    """Take back the role the member holds at a group (not their last one)."""
    view = await membership_service.remove_role(session, actor, org_id, user_id, group_id=group_id)
    return MemberOut.of(view)


# --- invitations ------------------------------------------------------------------------------


@router.post(f"{ORG}/invitations", status_code=201, tags=["invitations"], responses=CONFLICT)
async def create_invitation(
    org_id: str,
    body: InvitationCreate,
    session: DbSession,
    actor: CurrentActor,
    settings: CurrentSettings,
    now: Now,
) -> InvitationCreated:
    """Invite an email to a role at a group (its home there). The token is shown only here;
    send it to the invitee, who accepts with POST /api/v1/invitations/{token}/accept."""
    invitation, token = await invitation_service.create_invitation(
        session,
        actor,
        org_id,
        pepper=settings.secret,
        email=body.email,
        role=body.role,
        group_id=body.group_id,
        expires_in_days=body.expires_in_days,
        now=now,
    )
    out = InvitationOut.of(invitation, invitation_service.effective_status(invitation, now))
    return InvitationCreated(**out.model_dump(), token=token)


@router.get(f"{ORG}/invitations", tags=["invitations"])
async def list_invitations(
    org_id: str,
    session: DbSession,
    actor: CurrentActor,
    now: Now,
    status: Literal["pending", "accepted", "revoked", "expired"] | None = None,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_PAGE,
) -> Page[InvitationOut]:
    """Owners and admins: the invitations they could have made."""
    rows, next_cursor = await invitation_service.list_invitations(
        session, actor, org_id, status=status, now=now, cursor=cursor, limit=limit
    )
    items = [InvitationOut.of(i, invitation_service.effective_status(i, now)) for i in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.delete(
    f"{ORG}/invitations/{{invitation_id}}",
    status_code=204,
    tags=["invitations"],
    responses=CONFLICT,
)
async def revoke_invitation(
    org_id: str, invitation_id: str, session: DbSession, actor: CurrentActor, now: Now
) -> Response:
    await invitation_service.revoke_invitation(session, actor, org_id, invitation_id, now)
    return Response(status_code=204)


@router.post(
    "/invitations/{token}/accept",
    tags=["invitations"],
    responses={**UNAUTHENTICATED, **NOT_FOUND, **CONFLICT, **INVALID},
)
async def accept_invitation(
    token: str,
    body: InvitationAccept,
    session: DbSession,
    signed_in: OptionalActor,
    settings: CurrentSettings,
    now: Now,
    meta: Meta,
) -> InvitationAccepted:
    """Join the organization. New people give a name and password; people who already have an
    account give its password, or call this signed in to it."""
    user, membership, session_token, secret = await invitation_service.accept_invitation(
        session,
        pepper=settings.secret,
        secret=token,
        signed_in=signed_in,
        name=body.name,
        password=body.password,
        session_ttl=timedelta(hours=settings.session_ttl_hours),
        now=now,
        meta=meta,
    )
    return InvitationAccepted(
        user_id=user.id,
        org_id=membership.org_id,
        token=secret,
        expires_at=session_token.expires_at,
    )
