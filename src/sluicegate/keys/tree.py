"""The keys as the org tree needs them (orgs/tree_keys.py `TreeKeys`): counts, and disabling
those of a removed member or a deleted group, each dropped from every worker's cache once the
change is committed."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.core.db import invalidate_after_commit
from sluicegate.core.invalidation import KEY_TOPIC
from sluicegate.keys import repository


class KeysOnTheTree:
    async def count_in_group(self, session: AsyncSession, group_id: str) -> int:
        return await repository.count_in_group(session, group_id)

    async def count_per_owner(
        self, session: AsyncSession, org_id: str, user_ids: Sequence[str]
    ) -> dict[str, int]:
        return await repository.count_per_owner(session, org_id, user_ids)

    async def disable(
        self,
        session: AsyncSession,
        org_id: str,
        *,
        owner_user_id: str | None = None,
        group_id: str | None = None,
    ) -> list[str]:
        disabled = await repository.disable_active(
            session, org_id, owner_user_id=owner_user_id, group_id=group_id
        )
        for key_id in disabled:
            invalidate_after_commit(session, KEY_TOPIC, key_id)
        return disabled
