"""Alerts about keys and members: `key.created`, `key.disabled`, `member.joined` and
`member.removed` from the events the keys and orgs capabilities announce (handled in the
transaction of the change itself, sluicegate/handlers.py), `key.expired` from the delivery
worker's periodic scan for keys that have expired, and the signed checkpoints of an org's audit
chain (`audit.checkpoint`), so that a copy of each leaves the database."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import outbox_repository as repository
from sluicegate.alerts.outbox import AlertDraft, raise_alert
from sluicegate.audit.checkpoints import Checkpoint
from sluicegate.audit.models import PLATFORM_CHAIN
from sluicegate.core.actors import Actor
from sluicegate.keys.events import KeyCreated, KeyDisabled, KeyFacts
from sluicegate.orgs.events import MemberJoined, MemberRemoved

# Keys expired longer ago than this are not announced (a scan after a long outage, or keys that
# expired before alerts existed): an alert that late helps nobody.
EXPIRY_LOOKBACK = timedelta(days=1)


def _by(actor: Actor | None) -> str:
    return f" by {actor.email}" if actor is not None and actor.email else ""


async def key_created(session: AsyncSession, event: KeyCreated) -> None:
    key = event.key
    dedupe = f"key.created:{key.id}"
    await _key_changed(session, key, event.actor, event.at, "key.created", dedupe, "info")


async def key_disabled(session: AsyncSession, event: KeyDisabled) -> None:
    key = event.key
    # Disabled again after being enabled is news again: the moment is part of the key.
    dedupe = f"key.disabled:{key.id}:{event.at.isoformat()}"
    await _key_changed(session, key, event.actor, event.at, "key.disabled", dedupe, "warning")


async def _key_changed(
    session: AsyncSession,
    key: KeyFacts,
    actor: Actor | None,
    now: datetime,
    event: str,
    dedupe_key: str,
    severity: str,
) -> None:
    """`key.created` or `key.disabled`: "The API key <name> (<prefix>…) was <verb> by <who>"."""
    verb = event.removeprefix("key.")
    await raise_alert(
        session,
        AlertDraft(
            org_id=key.org_id,
            event=event,
            dedupe_key=dedupe_key,
            severity=severity,
            title=f"API key {verb}: {key.name}",
            text=f"The API key {key.name} ({key.prefix}…) was {verb}{_by(actor)}.",
            occurred_at=now,
            group_id=key.group_id,
            key_owner_id=key.owner_user_id,
            fields=(("Key", f"{key.name} ({key.prefix}…)"),),
            details=_key_details(key, actor),
        ),
    )


async def keys_expired(session: AsyncSession, now: datetime) -> int:
    """Raise `key.expired` for keys whose expiry passed within EXPIRY_LOOKBACK; once per key
    and expiry (a key given a new expiry that passes again is announced again)."""
    raised = 0
    for key in await repository.keys_expired_between(session, now - EXPIRY_LOOKBACK, now):
        assert key.expires_at is not None
        alert_id = await raise_alert(
            session,
            AlertDraft(
                org_id=key.org_id,
                event="key.expired",
                dedupe_key=f"key.expired:{key.id}:{key.expires_at.isoformat()}",
                severity="warning",
                title=f"API key expired: {key.name}",
                text=f"The API key {key.name} ({key.prefix}…) expired at "
                f"{key.expires_at:%Y-%m-%d %H:%M} UTC; requests with it are refused.",
                occurred_at=key.expires_at,
                group_id=key.group_id,
                key_owner_id=key.owner_user_id,
                fields=(("Key", f"{key.name} ({key.prefix}…)"),),
                details=_key_details(KeyFacts.of(key), None),
            ),
        )
        raised += alert_id is not None
    return raised


def _key_details(key: KeyFacts, actor: Actor | None) -> dict[str, object]:
    return {
        "key_id": key.id,
        "key_name": key.name,
        "prefix": key.prefix,
        "group_id": key.group_id,
        "owner_user_id": key.owner_user_id,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "actor_user_id": actor.user_id if actor is not None else None,
    }


async def member_joined(session: AsyncSession, event: MemberJoined) -> None:
    org_id, user_id, home_group_id, role, now = (
        event.org_id,
        event.user_id,
        event.home_group_id,
        event.role,
        event.at,
    )
    email = await _email(session, org_id, user_id)
    await raise_alert(
        session,
        AlertDraft(
            org_id=org_id,
            event="member.joined",
            dedupe_key=f"member.joined:{user_id}:{now.isoformat()}",
            severity="info",
            title=f"Member joined: {email}",
            text=f"{email} joined the organization as {role}.",
            occurred_at=now,
            group_id=home_group_id,
            key_owner_id=user_id,
            fields=(("Member", email), ("Role", role)),
            details={"user_id": user_id, "home_group_id": home_group_id, "role": role},
        ),
    )


async def member_removed(session: AsyncSession, event: MemberRemoved) -> None:
    org_id, user_id, home_group_id, actor, now = (
        event.org_id,
        event.user_id,
        event.home_group_id,
        event.actor,
        event.at,
    )
    disabled_keys = list(event.disabled_keys)
    email = await _email(session, org_id, user_id)
    left = actor.user_id == user_id
    await raise_alert(
        session,
        AlertDraft(
            org_id=org_id,
            event="member.removed",
            dedupe_key=f"member.removed:{user_id}:{now.isoformat()}",
            severity="warning",
            title=f"Member {'left' if left else 'removed'}: {email}",
            text=(
                f"{email} {'left the organization' if left else 'was removed' + _by(actor)}; "
                f"{len(disabled_keys)} of their API keys were disabled."
            ),
            occurred_at=now,
            group_id=home_group_id,
            fields=(("Member", email), ("Keys disabled", str(len(disabled_keys)))),
            details={
                "user_id": user_id,
                "home_group_id": home_group_id,
                "disabled_keys": disabled_keys,
                "actor_user_id": actor.user_id,
            },
        ),
    )


async def _email(session: AsyncSession, org_id: str, user_id: str) -> str:
    found = await repository.member(session, org_id, user_id)
    return found[0].email if found is not None else user_id


async def audit_checkpoint(session: AsyncSession, checkpoint: Checkpoint, value: str) -> None:
    """`audit.checkpoint`: the signed head of the org's audit chain, once per head."""
    if checkpoint.chain == PLATFORM_CHAIN:
        return  # no org's rules cover the platform chain: it is in the log only
    await raise_alert(
        session,
        AlertDraft(
            org_id=checkpoint.chain,
            event="audit.checkpoint",
            dedupe_key=f"audit.checkpoint:{checkpoint.seq}",
            severity="info",
            title=f"Audit checkpoint: {checkpoint.seq} events",
            text=(
                f"The audit trail held {checkpoint.seq} events at "
                f"{checkpoint.taken_at.strftime('%Y-%m-%d %H:%M UTC')}. Keep this checkpoint: "
                "`sluicegate audit verify --checkpoint` compares the trail with it."
            ),
            occurred_at=checkpoint.taken_at,
            fields=(("Checkpoint", value),),
            details={"checkpoint": value, "seq": checkpoint.seq},
        ),
    )
