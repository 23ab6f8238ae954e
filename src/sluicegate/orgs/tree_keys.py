"""The API keys hung on the org tree, as the tree's own rules need them: counted before a group
is deleted and per member in member lists, disabled when their owner is removed or their group
deleted with them.

Keys sit above orgs (a key lives in a group and is owned by a member), so orgs does not query
their table: it asks through this protocol, which the keys capability implements
(keys/tree.py) and the runtime hands to every unit of work (sluicegate/runtime.py), as it does
the event handlers (core/events.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

TREE_KEYS_KEY = "sluicegate.tree_keys"


class TreeKeys(Protocol):
    async def count_in_group(self, session: AsyncSession, group_id: str) -> int:
        """Keys in the group that are not revoked."""
        ...

    async def count_per_owner(
        self, session: AsyncSession, org_id: str, user_ids: Sequence[str]
    ) -> dict[str, int]:
        """Keys that are not revoked, per owner."""
        ...

    async def disable(
        self,
        session: AsyncSession,
        org_id: str,
        *,
        owner_user_id: str | None = None,
        group_id: str | None = None,
    ) -> list[str]:
        """Disable the active keys of an owner or in a group, on every worker once committed;
        their ids."""
        ...


def session_info(keys: TreeKeys) -> dict[str, Any]:
    """What a session factory puts in every session's `info` so the tree's rules reach keys."""
    return {TREE_KEYS_KEY: keys}


def tree_keys(session: AsyncSession) -> TreeKeys:
    keys: TreeKeys | None = session.info.get(TREE_KEYS_KEY)
    if keys is None:
        raise RuntimeError(
            "this session cannot reach the keys hung on the org tree; build sessions through "
            "the Runtime (sluicegate/runtime.py)"
        )
    return keys
