"""Reading the audit trail through the admin API: who may see which events, and verifying.

Owners read their org's whole trail; admins and viewers the events of their subtree (each event
names the node its target belongs to); platform admins the platform chain of identity events.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.audit.models import PLATFORM_CHAIN, AuditEvent
from sluicegate.audit.service import ChainReport, verify_chain
from sluicegate.audit_trail import repository
from sluicegate.audit_trail.repository import AuditFilters
from sluicegate.core.actors import Actor
from sluicegate.core.errors import InvalidInput
from sluicegate.identity.service import require_platform_admin
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import ADMIN, VIEWER, Action, authorize, readable_subtrees
from sluicegate.orgs.models import PATH_SEPARATOR

__all__ = ["AuditFilters", "list_events", "verify"]


async def list_events(
    session: AsyncSession,
    actor: Actor,
    org_id: str | None,
    filters: AuditFilters,
    *,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[AuditEvent], str | None]:
    """Events of an org's trail (None: the platform chain), newest first."""
    subtrees: list[str] | None = None
    if org_id is None:
        require_platform_admin(actor)
        chain = PLATFORM_CHAIN
    else:
        access = await orgs.load_access(session, actor, org_id)
        authorize(access, Action.AUDIT_LIST)
        readable = readable_subtrees(access, ADMIN, VIEWER)
        if readable is not None:
            subtrees = [PATH_SEPARATOR.join(path) for path in readable]
        chain = org_id
    if filters.since is not None and filters.until is not None and filters.since >= filters.until:
        raise InvalidInput("since: must be before until", details={"field": "since"})
    return await repository.list_events(
        session, chain, filters, subtrees=subtrees, cursor=cursor, limit=limit
    )


async def verify(session: AsyncSession, actor: Actor, org_id: str | None) -> ChainReport:
    """Recompute a whole chain: the org's (owners, and admins or viewers bound at the root), or
    the platform's (platform admins)."""
    if org_id is None:
        require_platform_admin(actor)
        return await verify_chain(session, PLATFORM_CHAIN)
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.AUDIT_READ, access.root)
    return await verify_chain(session, org_id)
