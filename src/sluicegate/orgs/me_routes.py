"""`GET /auth/me`: who you are and your roles in every organization you belong to. The person is
identity's; the memberships are the org tree's, so the answer is put together here, above both."""

from __future__ import annotations

from fastapi import APIRouter

from sluicegate.api.deps import DbSession
from sluicegate.api.errors import STANDARD_ERRORS
from sluicegate.identity import service as identity
from sluicegate.identity.dependencies import CurrentActor
from sluicegate.identity.schemas import MembershipOut, MeOut, RoleOut
from sluicegate.orgs import membership_service

router = APIRouter(tags=["identity"], responses=STANDARD_ERRORS)


@router.get("/auth/me")
async def me(session: DbSession, actor: CurrentActor) -> MeOut:
    """Who you are, and your roles in every organization you belong to."""
    user = await identity.get_self(session, actor)
    memberships = await membership_service.memberships_of(session, actor.user_id)
    return MeOut(
        id=user.id,
        email=user.email,
        name=user.name,
        status=user.status,
        is_platform_admin=user.is_platform_admin,
        memberships=[
            MembershipOut(
                org_id=m.org_id,
                org_name=org_name,
                home_group_id=m.home_group_id,
                roles=[RoleOut(group_id=b.group_id, role=b.role) for b in bindings],
            )
            for m, org_name, bindings in memberships
        ],
    )
