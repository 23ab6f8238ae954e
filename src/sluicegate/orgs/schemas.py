"""Request and response shapes of organizations, groups, members and invitations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.api.fields import Email, Id, Label, Password, Role
from sluicegate.orgs.invitation_service import DEFAULT_INVITATION_DAYS, MAX_INVITATION_DAYS
from sluicegate.orgs.membership_service import MemberView
from sluicegate.orgs.models import Group, Invitation, Organization
from sluicegate.orgs.service import MAX_LEVEL_LIMIT

TIMEZONE_HELP = "an IANA timezone name, e.g. 'Europe/Paris'"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- organizations ----------------------------------------------------------------------------


class OrgCreate(Strict):
    name: Label
    timezone: str = Field(default="UTC", max_length=64, description=TIMEZONE_HELP)


class OrgUpdate(Strict):
    name: Label | None = None
    timezone: str | None = Field(default=None, max_length=64, description=TIMEZONE_HELP)
    max_level: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LEVEL_LIMIT,
        description="deepest group level allowed (root is 0; default 3: org, division, team, "
        "project)",
    )
    topup_max_level: int | None = Field(
        default=None,
        ge=0,
        le=MAX_LEVEL_LIMIT,
        description="admins bound at this level or above may top up credits",
    )
    members_see_org_feed: bool | None = None
    credit_enforced: bool | None = Field(
        default=None,
        description="prepaid: refuse requests (402) the available credit cannot cover; off, the "
        "ledger is kept but never blocks. Until an owner sets it, the org's first top-up turns "
        "it on",
    )


class OrgOut(BaseModel):
    id: str
    name: str
    timezone: str
    root_group_id: str
    max_level: int
    topup_max_level: int
    members_see_org_feed: bool
    credit_enforced: bool
    created_at: datetime

    @classmethod
    def of(cls, org: Organization, root_group_id: str) -> OrgOut:
        return cls(
            id=org.id,
            name=org.name,
            timezone=org.timezone,
            root_group_id=root_group_id,
            max_level=org.max_level,
            topup_max_level=org.topup_max_level,
            members_see_org_feed=org.members_see_org_feed,
            credit_enforced=bool(org.credit_enforced),
            created_at=org.created_at,
        )


# --- groups -----------------------------------------------------------------------------------


class GroupCreate(Strict):
    name: Label
    parent_id: Id | None = Field(default=None, description="absent or null: under the root")


class GroupUpdate(Strict):
    name: Label | None = None
    parent_id: Id | None = Field(default=None, description="a new parent: moves the subtree")


class GroupOut(BaseModel):
    id: str
    name: str
    parent_id: str | None
    level: int
    path: list[str] = Field(description="group ids from the root down to this group")
    created_at: datetime

    @classmethod
    def of(cls, group: Group) -> GroupOut:
        return cls(
            id=group.id,
            name=group.name,
            parent_id=group.parent_id,
            level=group.level,
            path=group.path.split("/"),
            created_at=group.created_at,
        )


class GroupDeleted(BaseModel):
    disabled_key_ids: list[str]


# --- members ----------------------------------------------------------------------------------


class RoleBindingOut(BaseModel):
    group_id: str
    role: str


class MemberOut(BaseModel):
    user_id: str
    email: str
    name: str
    status: Literal["active", "removed"]
    user_status: Literal["active", "frozen"]
    home_group_id: str
    roles: list[RoleBindingOut]
    key_count: int = Field(description="keys that are not deleted")
    joined_at: datetime
    removed_at: datetime | None

    @classmethod
    def of(cls, view: MemberView) -> MemberOut:
        membership, user = view.membership, view.user
        return cls(
            user_id=user.id,
            email=user.email,
            name=user.name,
            status=membership.status,
            user_status=user.status,
            home_group_id=membership.home_group_id,
            roles=[RoleBindingOut(group_id=b.group_id, role=b.role) for b in view.bindings],
            key_count=view.key_count,
            joined_at=membership.created_at,
            removed_at=membership.removed_at,
        )


class MemberUpdate(Strict):
    home_group_id: Id


class RoleSet(Strict):
    group_id: Id
    role: Role


# --- invitations ------------------------------------------------------------------------------


class InvitationCreate(Strict):
    email: Email
    role: Role
    group_id: Id = Field(description="where the role is bound; also the new member's home")
    expires_in_days: int = Field(default=DEFAULT_INVITATION_DAYS, ge=1, le=MAX_INVITATION_DAYS)


class InvitationOut(BaseModel):
    id: str
    email: str
    role: str
    group_id: str
    status: Literal["pending", "accepted", "revoked", "expired"]
    invited_by_user_id: str | None
    accepted_user_id: str | None
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, invitation: Invitation, status: str) -> InvitationOut:
        return cls(
            id=invitation.id,
            email=invitation.email,
            role=invitation.role,
            group_id=invitation.group_id,
            status=status,
            invited_by_user_id=invitation.invited_by_user_id,
            accepted_user_id=invitation.accepted_user_id,
            created_at=invitation.created_at,
            expires_at=invitation.expires_at,
        )


class InvitationCreated(InvitationOut):
    token: str = Field(description="Shown only here; the invitee accepts with it")


class InvitationAccept(Strict):
    name: Label | None = Field(default=None, description="required for a new account")
    password: Password | None = Field(
        default=None,
        description="a new account's password, or an existing account's own password "
        "(alternatively accept while signed in to it)",
    )


class InvitationAccepted(BaseModel):
    user_id: str
    org_id: str
    token: str = Field(description="A session token of the account that joined")
    expires_at: datetime | None
