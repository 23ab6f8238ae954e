"""Request and response shapes of /api/v1/auth and /api/v1/users."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluicegate.api.fields import Email, Label, Moment, Password
from sluicegate.identity.models import AdminToken


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Strict):
    email: Email
    password: Password


class LoginOut(BaseModel):
    user_id: str
    token: str = Field(description="A session token; send it as 'Authorization: Bearer <token>'")
    expires_at: datetime | None


class RoleOut(BaseModel):
    group_id: str
    role: str


class MembershipOut(BaseModel):
    org_id: str
    org_name: str
    home_group_id: str
    roles: list[RoleOut]


class MeOut(BaseModel):
    id: str
    email: str
    name: str
    status: str
    is_platform_admin: bool
    memberships: list[MembershipOut]


class MeUpdate(Strict):
    name: Label | None = None
    password: Password | None = Field(
        default=None, description="A new password; needs current_password when one is set"
    )
    current_password: Password | None = None


class TokenIn(Strict):
    name: Label
    expires_at: Moment | None = Field(
        default=None, description="RFC 3339; absent: the token does not expire"
    )


class TokenOut(BaseModel):
    id: str
    kind: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    current: bool = Field(description="whether this is the token the call was made with")

    @classmethod
    def of(cls, token: AdminToken, current_id: str | None) -> TokenOut:
        return cls(
            id=token.id,
            kind=token.kind,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            expires_at=token.expires_at,
            last_used_at=token.last_used_at,
            current=token.id == current_id,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The secret, shown only in this response")


class RevokedOut(BaseModel):
    revoked: int


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str
    status: Literal["active", "frozen"]
    is_platform_admin: bool
    created_at: datetime
