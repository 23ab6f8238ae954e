"""The rules of invitations: offered by those who may grant the role, at most one pending per
email, accepted by new people (name and password) or existing ones (their password or token)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.service import record, record_action
from sluicegate.core.actors import Actor, RequestMeta
from sluicegate.core.digests import new_secret, secret_digest
from sluicegate.core.errors import (
    AccountFrozen,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from sluicegate.core.events import announce
from sluicegate.core.ids import new_id
from sluicegate.identity import service as identity
from sluicegate.identity.models import AdminToken, User
from sluicegate.orgs import repository
from sluicegate.orgs.authorize import ADMIN, Action, Grant, authorize, can_grant
from sluicegate.orgs.events import MemberJoined
from sluicegate.orgs.membership_service import check_role_placement, join
from sluicegate.orgs.models import PATH_SEPARATOR, Invitation, Membership
from sluicegate.orgs.service import clean_name, group_of, load_access, path_of

INVITATION_PREFIX = "sg-inv-"
DEFAULT_INVITATION_DAYS = 7
MAX_INVITATION_DAYS = 30


def effective_status(invitation: Invitation, now: datetime) -> str:
    """A pending invitation past its expiry reads as expired before anyone touches it."""
    if invitation.status == "pending" and invitation.expires_at <= now:
        return "expired"
    return invitation.status


async def create_invitation(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    pepper: bytes,
    email: str,
    role: str,
    group_id: str,
    expires_in_days: int = DEFAULT_INVITATION_DAYS,
    now: datetime,
) -> tuple[Invitation, str]:
    """Offer `role` at `group_id` (also the new member's home) to `email`; returns the row and
    the token, which is shown once. 409 when that email has a live invitation or is a member."""
    access = await load_access(session, actor, org_id)
    group = await group_of(session, access, group_id)
    check_role_placement(role, group)
    authorize(access, Action.ROLE_GRANT, Grant(role, path_of(group)))
    if not 1 <= expires_in_days <= MAX_INVITATION_DAYS:
        raise InvalidInput(
            f"expires_in_days: must be 1 to {MAX_INVITATION_DAYS}",
            details={"field": "expires_in_days"},
        )
    address = identity.normalize_email(email)
    existing_user = await identity.user_by_email(session, address)
    if existing_user is not None:
        membership = await repository.membership(session, org_id, existing_user.id)
        if membership is not None and membership.status == "active":
            raise Conflict(f"{address} is already a member of this organization")
    pending = await repository.pending_invitation(session, org_id, address)
    if pending is not None:
        if pending.expires_at > now:
            raise Conflict(
                f"{address} already has a pending invitation ({pending.id}); revoke it first or "
                "wait until it expires",
                details={"invitation_id": pending.id},
            )
        pending.status, pending.closed_at = "expired", now
        await session.flush()
    secret = new_secret(INVITATION_PREFIX)
    invitation = Invitation(
        id=new_id("inv"),
        org_id=org_id,
        email=address,
        role=role,
        group_id=group.id,
        digest=secret_digest(pepper, secret),
        invited_by_user_id=actor.user_id,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days),
    )
    await repository.add(session, invitation)
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="invitation.create",
        target_type="invitation",
        target_id=invitation.id,
        group_id=group.id,
        after=_view(invitation),
    )
    return invitation, secret


async def list_invitations(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    status: str | None,
    now: datetime,
    cursor: str | None,
    limit: int,
) -> tuple[list[Invitation], str | None]:
    """The invitations the caller could have made: all for owners, for admins those into their
    subtree with a role they may grant."""
    access = await load_access(session, actor, org_id)
    authorize(access, Action.INVITATION_LIST)
    subtrees = None
    if not access.is_owner:
        subtrees = [PATH_SEPARATOR.join(b.path) for b in access.holding(ADMIN)]
    rows, next_cursor = await repository.list_invitations(
        session, org_id, subtrees=subtrees, status=status, now=now, cursor=cursor, limit=limit
    )
    if subtrees is not None:
        groups = await repository.groups_by_id(session, org_id, [i.group_id for i in rows])
        rows = [i for i in rows if can_grant(access, i.role, path_of(groups[i.group_id]))]
    return rows, next_cursor


async def revoke_invitation(
    session: AsyncSession, actor: Actor, org_id: str, invitation_id: str, now: datetime
) -> None:
    access = await load_access(session, actor, org_id)
    invitation = await repository.invitation_in_org(session, org_id, invitation_id)
    if invitation is None:
        raise NotFound(f"invitation {invitation_id} not found")
    groups = await repository.groups_by_id(session, org_id, [invitation.group_id])
    authorize(
        access, Action.ROLE_GRANT, Grant(invitation.role, path_of(groups[invitation.group_id]))
    )
    status = effective_status(invitation, now)
    if status != "pending":
        raise Conflict(f"invitation {invitation.id} is {status}, not pending")
    invitation.status, invitation.closed_at = "revoked", now
    await session.flush()
    await record_action(
        session,
        actor,
        org_id=org_id,
        action="invitation.revoke",
        target_type="invitation",
        target_id=invitation.id,
        group_id=invitation.group_id,
        before=_view(invitation),
    )


async def accept_invitation(
    session: AsyncSession,
    *,
    pepper: bytes,
    secret: str,
    signed_in: Actor | None,
    name: str | None,
    password: str | None,
    session_ttl: timedelta,
    now: datetime,
    meta: RequestMeta,
) -> tuple[User, Membership, AdminToken, str]:
    """Join the org the invitation names and start a session.

    A new person gives a name and a password. Someone who already has an account proves it is
    theirs: signed in (an admin token of that account) or with its password. The invitation's
    holder alone can never take over an existing account."""
    invitation = await repository.invitation_by_digest(session, secret_digest(pepper, secret))
    if invitation is None:
        raise NotFound("invitation not found; check the token, or ask for a new invitation")
    status = effective_status(invitation, now)
    if status != "pending":
        raise Conflict(f"this invitation is {status}; ask for a new one")
    if await repository.organization(session, invitation.org_id) is None:
        raise NotFound("invitation not found; its organization no longer exists")
    home = await repository.group_in_org(session, invitation.org_id, invitation.group_id)
    if home is None:
        raise Conflict("the group this invitation was for has been deleted; ask for a new one")
    if signed_in is not None and signed_in.email != invitation.email:
        raise PermissionDenied(
            "this invitation is for another email address than the account signed in"
        )
    user = await identity.user_by_email(session, invitation.email)
    if user is None:
        user = await _new_person(session, invitation.email, name, password)
    else:
        await _prove_account(user, signed_in, password)
    membership = await join(session, invitation.org_id, user.id, home=home, role=invitation.role)
    invitation.status, invitation.closed_at = "accepted", now
    invitation.accepted_user_id = user.id
    await session.flush()
    await announce(session, MemberJoined(invitation.org_id, user.id, home.id, invitation.role, now))
    token, token_secret = await identity.issue_admin_token(
        session,
        user,
        pepper=pepper,
        kind="session",
        name="invitation",
        expires_at=now + session_ttl,
    )
    await record(
        session,
        org_id=invitation.org_id,
        actor_user_id=user.id,
        action="member.join",
        target_type="member",
        target_id=user.id,
        group_id=home.id,
        after={"invitation_id": invitation.id, "role": invitation.role, "home_group_id": home.id},
        meta=meta,
        now=now,
    )
    return user, membership, token, token_secret


async def _new_person(
    session: AsyncSession, email: str, name: str | None, password: str | None
) -> User:
    if not name:
        raise InvalidInput("name: required to create your account", details={"field": "name"})
    if not password:
        raise InvalidInput(
            "password: required to create your account", details={"field": "password"}
        )
    return await identity.register_user(
        session, email=email, name=clean_name(name), password=password
    )


async def _prove_account(user: User, signed_in: Actor | None, password: str | None) -> None:
    if user.status != "active":
        raise AccountFrozen("this account is frozen; a platform admin can unfreeze it")
    if signed_in is not None:  # of this very email (checked by the caller)
        return
    if password and await identity.password_matches(user, password):
        return
    raise Unauthenticated(
        "an account with this email already exists; give its password, or accept while signed "
        "in to it (Authorization: Bearer <admin token>)"
    )


def _view(invitation: Invitation) -> dict[str, object]:
    return {
        "email": invitation.email,
        "role": invitation.role,
        "group_id": invitation.group_id,
        "expires_at": invitation.expires_at.isoformat(),
    }
