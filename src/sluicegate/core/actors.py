"""Who is calling the admin API and from where: built once per request, passed to services."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Where a mutation came from, as the admin API saw it (recorded in the audit trail)."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated person. Authorization inside an org is decided by orgs.authorize."""

    user_id: str
    email: str
    is_platform_admin: bool = False
    token_id: str | None = None
    token_kind: str | None = None  # session | personal
    meta: RequestMeta = field(default_factory=RequestMeta)
