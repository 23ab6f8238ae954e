"""What the orgs capability announces (core/events.py): members joined or removed, and org
settings that others keep state for (the timezone of daily rollups, whether credit is enforced)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sluicegate.core.actors import Actor


@dataclass(frozen=True, slots=True)
class MemberJoined:
    org_id: str
    user_id: str
    home_group_id: str
    role: str
    at: datetime


@dataclass(frozen=True, slots=True)
class MemberRemoved:
    """A member was removed (or left: `actor` is the member); `disabled_keys` were theirs."""

    org_id: str
    user_id: str
    home_group_id: str
    disabled_keys: tuple[str, ...]
    actor: Actor
    at: datetime


@dataclass(frozen=True, slots=True)
class OrgTimezoneChanged:
    """Announced after the org's row is flushed (and so locked) with its new timezone."""

    org_id: str
    timezone: str


@dataclass(frozen=True, slots=True)
class CreditEnforcementChanged:
    org_id: str
    enforced: bool
