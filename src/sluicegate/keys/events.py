"""What the keys capability announces (core/events.py): a key was created or disabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sluicegate.core.actors import Actor
from sluicegate.keys.models import ApiKey


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What a listener may want to say about a key, as it was at the change."""

    id: str
    org_id: str
    group_id: str
    owner_user_id: str
    name: str
    prefix: str
    expires_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyFacts:
        return cls(
            key.id,
            key.org_id,
            key.group_id,
            key.owner_user_id,
            key.name,
            key.prefix,
            key.expires_at,
        )


@dataclass(frozen=True, slots=True)
class KeyCreated:
    key: KeyFacts
    actor: Actor
    at: datetime


@dataclass(frozen=True, slots=True)
class KeyDisabled:
    """An active key was disabled by `actor` (None: by the system)."""

    key: KeyFacts
    actor: Actor | None
    at: datetime
