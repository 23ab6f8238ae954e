"""The rules of alert channels: a channel's URL is checked for its kind and against SSRF and
kept sealed with its signing secrets (shown once, on creation and rotation); an email channel's
addresses are sealed alike, and it exists only where the operator configured an SMTP server.

Who may do what (orgs.authorize): the org's channels are read by owners, admins and viewers and
changed by owners and admins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import repository
from sluicegate.alerts.channel_config import (
    channel_box,
    mail_hint,
    open_config,
    seal_config,
    target_hint,
)
from sluicegate.alerts.models import CHANNEL_KINDS, AlertChannel
from sluicegate.alerts.schemas import (
    URL_MAX_LENGTH,
)
from sluicegate.alerts.signing import new_secret
from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.egress import EgressRefused, IPNetwork, Resolver, check_url
from sluicegate.core.errors import Conflict, InvalidInput, NotFound
from sluicegate.core.ids import new_id
from sluicegate.core.sealing import SealBroken, SecretBox
from sluicegate.orgs import service as orgs
from sluicegate.orgs.authorize import (
    Action,
    OrgAccess,
    authorize,
)

# A receiver needs time to deploy a new secret; a day covers a deploy cycle and a weekend's
# on-call, without leaving a leaked secret valid for long.
SECRET_OVERLAP = timedelta(hours=24)
# Every secret still valid adds a `v1=` entry to each delivery's signature header; after quick
# successive rotations only the latest rotated-out ones matter to a receiver.
MAX_PREVIOUS_SECRETS = 3
# A channel is created by a person waiting for the answer: a resolver that hangs is refused.
RESOLVE_TIMEOUT_SECONDS = 5.0
TARGET_HINT_LENGTH = 300  # the column's size
SLACK_HOSTS = ("hooks.slack.com",)
DISCORD_HOSTS = ("discord.com", "discordapp.com")
DISCORD_PATH = "/api/webhooks/"


@dataclass(frozen=True, slots=True)
class Outbound:
    """What channel changes need besides the session: the box channel configs are sealed in,
    the networks the operator lets channels reach although not public, the DNS resolver (the
    system's, or one a test puts in its place), and whether mail can be sent (an SMTP server
    is configured)."""

    box: SecretBox
    allowed: tuple[IPNetwork, ...]
    resolve: Resolver
    mail: bool = False

    @classmethod
    def build(
        cls,
        secret: bytes,
        allowed: Sequence[IPNetwork],
        resolve: Resolver,
        *,
        mail: bool = False,
    ) -> Outbound:
        return cls(channel_box(secret), tuple(allowed), resolve, mail)


# --- channels ----------------------------------------------------------------------------------


async def create_channel(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    outbound: Outbound,
    *,
    name: str,
    kind: str,
    url: str | None = None,
    to: Sequence[str] | None = None,
    enabled: bool = True,
    now: datetime,
) -> tuple[AlertChannel, str | None]:
    """A new channel and, for a webhook, its signing secret (never shown again). Webhook,
    slack and discord channels take a `url`, email channels `to` (checked addresses)."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    label = orgs.clean_name(name)
    _deliverable(kind, outbound)
    config: dict[str, Any]
    if kind == "email":
        _no_url(url)
        config, hint = _mail_config(to)
    else:
        _no_addresses(kind, to)
        if url is None:
            raise InvalidInput(
                f"url: a {kind} channel needs the URL its alerts are posted to",
                details={"field": "url"},
            )
        url, hint = await _checked_url(outbound, kind, url)
        config = {"url": url}
    await _channel_name_is_free(session, org_id, label)
    secret = new_secret() if kind == "webhook" else None
    if secret is not None:
        config["secrets"] = [{"secret": secret, "expires_at": None}]
    channel_id = new_id("chn")
    channel = AlertChannel(
        id=channel_id,
        org_id=org_id,
        name=label,
        kind=kind,
        target_hint=hint,
        config_sealed=seal_config(outbound.box, org_id, channel_id, config),
        enabled=enabled,
        created_by=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    await repository.add(session, channel)
    await _record_channel(
        session, actor, access, "alert_channel.create", channel, after=channel_view(channel)
    )
    return channel, secret


async def get_channel(
    session: AsyncSession, actor: Actor, org_id: str, channel_id: str
) -> AlertChannel:
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_READ)
    return await _channel(session, access, channel_id)


async def list_channels(
    session: AsyncSession, actor: Actor, org_id: str, *, cursor: str | None, limit: int
) -> tuple[list[AlertChannel], str | None]:
    """The org's channels that are not deleted."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_READ)
    return await repository.list_channels(session, org_id, cursor=cursor, limit=limit)


async def update_channel(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    outbound: Outbound,
    channel_id: str,
    changes: dict[str, Any],
    *,
    now: datetime,
) -> AlertChannel:
    """Change `name`, `url` (checked again; a webhook keeps its secrets), `to` (an email
    channel's addresses) or `enabled`. Only the fields present and not None in `changes`
    change."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    channel = await _channel(session, access, channel_id)
    before = channel_view(channel)
    if changes.get("name") is not None:
        label = orgs.clean_name(changes["name"])
        if label != channel.name:
            await _channel_name_is_free(session, org_id, label, except_id=channel.id)
            channel.name = label
    if channel.kind == "email":
        _no_url(changes.get("url"))
    else:
        _no_addresses(channel.kind, changes.get("to"))
    if changes.get("url") is not None:
        url, hint = await _checked_url(outbound, channel.kind, changes["url"])
        config = _open(outbound, channel)
        config["url"] = url
        channel.config_sealed = seal_config(outbound.box, org_id, channel.id, config)
        channel.target_hint = hint
    if changes.get("to") is not None:
        _deliverable(channel.kind, outbound)
        config, hint = _mail_config(changes["to"])
        channel.config_sealed = seal_config(outbound.box, org_id, channel.id, config)
        channel.target_hint = hint
    if changes.get("enabled") is not None:
        channel.enabled = bool(changes["enabled"])
    channel.updated_at = now
    await session.flush()
    await _record_channel(
        session,
        actor,
        access,
        "alert_channel.update",
        channel,
        before=before,
        after=channel_view(channel),
    )
    return channel


async def rotate_signing_secret(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    outbound: Outbound,
    channel_id: str,
    *,
    now: datetime,
) -> tuple[AlertChannel, str, datetime]:
    """A new signing secret for a webhook channel, and until when the old one still signs
    along with it (SECRET_OVERLAP). Rotated-out secrets already expired are dropped."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    channel = await _channel(session, access, channel_id)
    if channel.kind != "webhook":
        raise InvalidInput(
            f"channel {channel.id} is a {channel.kind} channel: only webhook channels have a "
            "signing secret to rotate (Slack and Discord authenticate by the URL itself, to "
            "replace it PATCH the channel's url; email has no secret)",
            details={"field": "kind", "kind": channel.kind},
        )
    config = _open(outbound, channel)
    expires_at = now + SECRET_OVERLAP
    secret = new_secret()
    config["secrets"] = [
        {"secret": secret, "expires_at": None},
        *_rotated_out(config.get("secrets", []), now, expires_at),
    ]
    channel.config_sealed = seal_config(outbound.box, org_id, channel.id, config)
    channel.updated_at = now
    await session.flush()
    await _record_channel(
        session,
        actor,
        access,
        "alert_channel.rotate",
        channel,
        after={"previous_secret_expires_at": expires_at.isoformat()},
    )
    return channel, secret, expires_at


async def delete_channel(
    session: AsyncSession, actor: Actor, org_id: str, channel_id: str, *, now: datetime
) -> None:
    """Soft delete: the channel leaves every list, its pending deliveries are cancelled and the
    rules that named it go on with their other channels and recipients."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    channel = await _channel(session, access, channel_id)
    before = channel_view(channel)
    channel.deleted_at = now
    channel.updated_at = now
    cancelled = await repository.cancel_pending_deliveries(session, org_id, channel.id)
    rules = await repository.rules_sending_to(session, org_id, channel.id)
    for rule in rules:
        rule.channel_ids = [c for c in rule.channel_ids if c != channel.id]
        rule.updated_at = now
    await session.flush()
    await _record_channel(
        session,
        actor,
        access,
        "alert_channel.delete",
        channel,
        before=before,
        after={
            "deleted": True,
            "cancelled_deliveries": cancelled,
            "removed_from_rules": [rule.id for rule in rules],
        },
    )


def _rotated_out(
    entries: list[dict[str, Any]], now: datetime, expires_at: datetime
) -> list[dict[str, Any]]:
    """The secrets that keep signing after a rotation: the current one (no expiry) until
    `expires_at`, earlier ones until their own expiry; those expired already are dropped."""
    kept = []
    for entry in entries:
        expiry = entry.get("expires_at")
        if expiry is None:
            kept.append({"secret": entry["secret"], "expires_at": expires_at.isoformat()})
        elif datetime.fromisoformat(expiry) > now:
            kept.append(entry)
    return kept[:MAX_PREVIOUS_SECRETS]


def channel_view(channel: AlertChannel) -> dict[str, Any]:
    """What the audit trail keeps of a channel: never its URL or secrets, only the hint."""
    return {
        "name": channel.name,
        "kind": channel.kind,
        "target": channel.target_hint,
        "enabled": channel.enabled,
    }


async def _channel(session: AsyncSession, access: OrgAccess, channel_id: str) -> AlertChannel:
    channel = await repository.channel_in_org(session, access.org_id, channel_id)
    if channel is None:
        raise NotFound(f"channel {channel_id} not found")
    return channel


async def _channel_name_is_free(
    session: AsyncSession, org_id: str, name: str, *, except_id: str | None = None
) -> None:
    if await repository.channel_named(session, org_id, name, except_id=except_id):
        raise Conflict(
            f"name: a channel named {name!r} already exists in this organization",
            details={"field": "name"},
        )


def _deliverable(kind: str, outbound: Outbound) -> None:
    if kind not in CHANNEL_KINDS:
        raise InvalidInput(
            "kind: must be webhook, slack, discord or email", details={"field": "kind"}
        )
    if kind == "email" and not outbound.mail:
        raise InvalidInput(
            "kind: email channels are not available on this instance: no SMTP server is "
            "configured (the operator sets SLUICEGATE_SMTP_URL and SLUICEGATE_SMTP_FROM); use "
            "a webhook, slack or discord channel meanwhile",
            details={"field": "kind"},
        )


def _no_url(url: str | None) -> None:
    if url is not None:
        raise InvalidInput(
            "url: an email channel takes addresses in `to`, not a url", details={"field": "url"}
        )


def _no_addresses(kind: str, to: Sequence[str] | None) -> None:
    if to is not None:
        raise InvalidInput(
            f"to: only email channels take addresses; a {kind} channel takes a url",
            details={"field": "to"},
        )


def _mail_config(to: Sequence[str] | None) -> tuple[dict[str, Any], str]:
    """The sealed config and target hint of an email channel (addresses checked by the
    schema: core/mail_addresses.py)."""
    if not to:
        raise InvalidInput(
            "to: an email channel needs the addresses its alerts are mailed to (1 to 20)",
            details={"field": "to"},
        )
    addresses = list(dict.fromkeys(to))
    return {"to": addresses}, mail_hint(len(addresses))


async def _checked_url(outbound: Outbound, kind: str, url: str) -> tuple[str, str]:
    """The URL (stripped) and its target hint, once it fits its kind and every address its
    host resolves to may be reached (core.egress)."""
    url = url.strip()
    if len(url) > URL_MAX_LENGTH:
        raise InvalidInput(f"url: at most {URL_MAX_LENGTH} characters", details={"field": "url"})
    _fits_kind(kind, url)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            await check_url(url, outbound.allowed, resolve=outbound.resolve)
    except EgressRefused as exc:
        raise InvalidInput(f"url: {exc}", details={"field": "url"}) from None
    except TimeoutError:
        raise InvalidInput(
            f"url: its host did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} seconds; check "
            "the name",
            details={"field": "url"},
        ) from None
    hint = target_hint(url)
    if len(hint) > TARGET_HINT_LENGTH:
        raise InvalidInput(
            f"url: its host and port take more than {TARGET_HINT_LENGTH} characters",
            details={"field": "url"},
        )
    return url, hint


def _fits_kind(kind: str, url: str) -> None:
    """Slack and Discord deliveries go to their own incoming-webhook hosts only."""
    if kind not in ("slack", "discord"):
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url: is not a valid URL", details={"field": "url"}) from None
    host = parts.hostname or ""
    if kind == "slack":
        if parts.scheme != "https" or host not in SLACK_HOSTS or port not in (None, 443):
            raise InvalidInput(
                "url: a Slack channel takes an incoming webhook URL of Slack, "
                "https://hooks.slack.com/services/...",
                details={"field": "url"},
            )
        if parts.path.strip("/") == "":
            raise InvalidInput(
                "url: a Slack incoming webhook URL has a path after the host "
                "(https://hooks.slack.com/services/T.../B.../...)",
                details={"field": "url"},
            )
        return
    if (
        parts.scheme != "https"
        or host not in DISCORD_HOSTS
        or port not in (None, 443)
        or not parts.path.startswith(DISCORD_PATH)
        or parts.path == DISCORD_PATH
    ):
        raise InvalidInput(
            "url: a Discord channel takes a webhook URL of Discord, "
            "https://discord.com/api/webhooks/<id>/<token> (or discordapp.com)",
            details={"field": "url"},
        )


def _open(outbound: Outbound, channel: AlertChannel) -> dict[str, Any]:
    try:
        return open_config(outbound.box, channel.org_id, channel.id, channel.config_sealed)
    except SealBroken:
        raise Conflict(
            f"channel {channel.id}: its stored URL and secrets no longer open with this "
            "instance's SLUICEGATE_SECRET_KEY (was the key changed?); delete the channel and "
            "create it again",
            details={"channel_id": channel.id},
        ) from None


async def _record_channel(
    session: AsyncSession,
    actor: Actor,
    access: OrgAccess,
    action: str,
    channel: AlertChannel,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Channels belong to the org: their events sit at its root group."""
    await record_action(
        session,
        actor,
        org_id=access.org_id,
        action=action,
        target_type="alert_channel",
        target_id=channel.id,
        group_id=access.root[0],
        before=before,
        after=after,
    )
