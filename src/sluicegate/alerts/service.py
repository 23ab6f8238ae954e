"""The rules of alert channels and alert rules: a channel's URL is checked for its kind and
against SSRF and kept sealed with its signing secrets (shown once, on creation and rotation); a
rule names an event, a scope, its params and who hears of it, all checked against the org.

Who may do what (orgs.authorize): the org's channels are read by owners, admins and viewers and
changed by owners and admins; a rule is read by whoever reads its scope node (the org root when
it has no group) and managed by the owners and admins covering it, on both ends of a move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import repository
from sluicegate.alerts.channel_config import channel_box, open_config, seal_config, target_hint
from sluicegate.alerts.models import CHANNEL_KINDS, EVENTS, AlertChannel, AlertRule
from sluicegate.alerts.schemas import (
    EVENT_PARAMS,
    MAX_RULE_CHANNELS,
    URL_MAX_LENGTH,
    Recipients,
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
    ADMIN,
    VIEWER,
    Action,
    OrgAccess,
    Path,
    authorize,
    readable_subtrees,
)
from sluicegate.orgs.models import PATH_SEPARATOR

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
    the networks the operator lets channels reach although not public, and the DNS resolver
    (the system's, or one a test puts in its place)."""

    box: SecretBox
    allowed: tuple[IPNetwork, ...]
    resolve: Resolver

    @classmethod
    def build(cls, secret: bytes, allowed: Sequence[IPNetwork], resolve: Resolver) -> Outbound:
        return cls(channel_box(secret), tuple(allowed), resolve)


# --- channels ----------------------------------------------------------------------------------


async def create_channel(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    outbound: Outbound,
    *,
    name: str,
    kind: str,
    url: str,
    enabled: bool = True,
    now: datetime,
) -> tuple[AlertChannel, str | None]:
    """A new channel and, for a webhook, its signing secret (never shown again)."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    label = orgs.clean_name(name)
    _deliverable(kind)
    url, hint = await _checked_url(outbound, kind, url)
    await _channel_name_is_free(session, org_id, label)
    secret = new_secret() if kind == "webhook" else None
    config: dict[str, Any] = {"url": url}
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
    """Change `name`, `url` (checked again; a webhook keeps its secrets) or `enabled`. Only the
    fields present and not None in `changes` change."""
    access = await orgs.load_access(session, actor, org_id)
    authorize(access, Action.CHANNEL_MANAGE)
    channel = await _channel(session, access, channel_id)
    before = channel_view(channel)
    if changes.get("name") is not None:
        label = orgs.clean_name(changes["name"])
        if label != channel.name:
            await _channel_name_is_free(session, org_id, label, except_id=channel.id)
            channel.name = label
    if changes.get("url") is not None:
        url, hint = await _checked_url(outbound, channel.kind, changes["url"])
        config = _open(outbound, channel)
        config["url"] = url
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
            "signing secret to rotate (Slack and Discord authenticate by the URL itself; to "
            "replace it, PATCH the channel's url)",
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


def _deliverable(kind: str) -> None:
    if kind == "email":
        raise InvalidInput(
            "kind: email channels are not available yet (mail delivery over SMTP is not built); "
            "use a webhook, slack or discord channel, or name people as the rule's recipients",
            details={"field": "kind"},
        )
    if kind not in CHANNEL_KINDS:
        raise InvalidInput("kind: must be webhook, slack or discord", details={"field": "kind"})


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


# --- rules -------------------------------------------------------------------------------------


async def create_rule(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    name: str,
    event: str,
    scope_group_id: str | None = None,
    params: dict[str, Any] | None = None,
    recipients: dict[str, Any] | None = None,
    channel_ids: Sequence[str] = (),
    enabled: bool = True,
    now: datetime,
) -> AlertRule:
    """A rule on `event` for the subtree of `scope_group_id` (None: the whole org). It needs at
    least one channel or recipient."""
    access = await orgs.load_access(session, actor, org_id)
    scope, node = await _scope(session, access, scope_group_id)
    authorize(access, Action.ALERT_MANAGE, node)
    label = orgs.clean_name(name)
    rule = AlertRule(
        id=new_id("arl"),
        org_id=org_id,
        name=label,
        event=_event(event),
        scope_group_id=scope,
        params=_params(event, params),
        recipients=await _recipients(session, org_id, recipients),
        channel_ids=await _channel_ids(session, org_id, channel_ids),
        enabled=enabled,
        created_by=actor.user_id,
        created_at=now,
        updated_at=now,
    )
    _has_audience(rule)
    await repository.add(session, rule)
    await _record_rule(session, actor, access, "alert_rule.create", rule, after=rule_view(rule))
    return rule


async def get_rule(session: AsyncSession, actor: Actor, org_id: str, rule_id: str) -> AlertRule:
    access = await orgs.load_access(session, actor, org_id)
    rule = await _rule(session, access, rule_id)
    authorize(access, Action.ALERT_READ, await _node_of(session, access, rule))
    return rule


async def list_rules(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    *,
    event: str | None,
    scope_group_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[AlertRule], str | None]:
    """The rules whose scope the caller reads: all for owners and those who read the root; the
    rules of their subtrees for other admins and viewers; none for members. `scope_group_id`
    keeps the rules of exactly that group (the root group's id: the whole-org rules)."""
    access = await orgs.load_access(session, actor, org_id)
    readable = readable_subtrees(access, ADMIN, VIEWER)
    if readable is not None and access.root in readable:
        readable = None
    return await repository.list_rules(
        session,
        org_id,
        subtrees=None if readable is None else [PATH_SEPARATOR.join(p) for p in readable],
        event=event,
        scope_group_id=scope_group_id,
        whole_org_only=scope_group_id == access.root[0],
        cursor=cursor,
        limit=limit,
    )


async def update_rule(
    session: AsyncSession,
    actor: Actor,
    org_id: str,
    rule_id: str,
    changes: dict[str, Any],
    *,
    now: datetime,
) -> AlertRule:
    """Change any field; only those present in `changes` change, and None means no change except
    for `scope_group_id` (None: the whole org). Moving a rule needs the right to manage it at
    both ends; a new event checks the params again (the rule's own unless new ones are given)."""
    access = await orgs.load_access(session, actor, org_id)
    rule = await _rule(session, access, rule_id)
    authorize(access, Action.ALERT_MANAGE, await _node_of(session, access, rule))
    before = rule_view(rule)
    if "scope_group_id" in changes:
        scope, node = await _scope(session, access, changes["scope_group_id"])
        if scope != rule.scope_group_id:
            authorize(access, Action.ALERT_MANAGE, node)
            rule.scope_group_id = scope
    if changes.get("name") is not None:
        rule.name = orgs.clean_name(changes["name"])
    event = _event(changes["event"]) if changes.get("event") is not None else rule.event
    if event != rule.event or changes.get("params") is not None:
        params = changes.get("params")
        rule.params = _params(event, rule.params if params is None else params)
        rule.event = event
    if changes.get("recipients") is not None:
        rule.recipients = await _recipients(session, org_id, changes["recipients"])
    if changes.get("channel_ids") is not None:
        rule.channel_ids = await _channel_ids(session, org_id, changes["channel_ids"])
    if changes.get("recipients") is not None or changes.get("channel_ids") is not None:
        _has_audience(rule)
    if changes.get("enabled") is not None:
        rule.enabled = bool(changes["enabled"])
    rule.updated_at = now
    await session.flush()
    await _record_rule(
        session, actor, access, "alert_rule.update", rule, before=before, after=rule_view(rule)
    )
    return rule


async def delete_rule(session: AsyncSession, actor: Actor, org_id: str, rule_id: str) -> None:
    """Delete the rule for good; alerts it raised and their deliveries stay (they name it by
    id only)."""
    access = await orgs.load_access(session, actor, org_id)
    rule = await _rule(session, access, rule_id)
    authorize(access, Action.ALERT_MANAGE, await _node_of(session, access, rule))
    await _record_rule(session, actor, access, "alert_rule.delete", rule, before=rule_view(rule))
    await repository.delete_row(session, rule)


def rule_view(rule: AlertRule) -> dict[str, Any]:
    """What the audit trail keeps of a rule."""
    return {
        "name": rule.name,
        "event": rule.event,
        "scope_group_id": rule.scope_group_id,
        "params": rule.params,
        "recipients": rule.recipients,
        "channel_ids": list(rule.channel_ids),
        "enabled": rule.enabled,
    }


async def _rule(session: AsyncSession, access: OrgAccess, rule_id: str) -> AlertRule:
    rule = await repository.rule_in_org(session, access.org_id, rule_id)
    if rule is None:
        raise NotFound(f"rule {rule_id} not found")
    return rule


async def _node_of(session: AsyncSession, access: OrgAccess, rule: AlertRule) -> Path:
    """The node a rule watches: its group (deleted or not), else the org root."""
    if rule.scope_group_id is None:
        return access.root
    groups = await orgs.groups_of(session, access, [rule.scope_group_id])
    return orgs.path_of(groups[rule.scope_group_id])


async def _scope(
    session: AsyncSession, access: OrgAccess, group_id: str | None
) -> tuple[str | None, Path]:
    """The stored scope of a rule and its node. The root group is the whole org (None), so a
    rule of the whole org is written one way only. An unknown id and another org's id answer
    the same 404 naming the field, as ids in bodies do everywhere (DESIGN §9)."""
    if group_id is None:
        return None, access.root
    group = await orgs.group_of(session, access, group_id, field="scope_group_id")
    if group.parent_id is None:
        return None, access.root
    return group.id, orgs.path_of(group)


def _event(event: str) -> str:
    if event not in EVENTS:
        raise InvalidInput(f"event: must be one of {', '.join(EVENTS)}", details={"field": "event"})
    return event


def _params(event: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The params of `event`, checked by its schema and in their stored form."""
    shape = EVENT_PARAMS[_event(event)]
    try:
        checked = shape.model_validate(params or {})
    except ValidationError as exc:
        raise _invalid("params", exc, f" (for event {event})") from None
    stored: dict[str, Any] = checked.model_dump(mode="json", exclude_none=True)
    return stored


async def _recipients(
    session: AsyncSession, org_id: str, recipients: dict[str, Any] | None
) -> dict[str, Any]:
    try:
        checked = Recipients.model_validate(recipients or {})
    except ValidationError as exc:
        raise _invalid("recipients", exc) from None
    members = await repository.active_member_ids(session, org_id, checked.user_ids)
    for user_id in checked.user_ids:
        if user_id not in members:
            raise NotFound(
                f"recipients.user_ids: {user_id!r} is not a member of this organization",
                details={"field": "recipients.user_ids", "user_id": user_id},
            )
    return checked.model_dump()


async def _channel_ids(session: AsyncSession, org_id: str, channel_ids: Sequence[str]) -> list[str]:
    wanted = list(dict.fromkeys(channel_ids))
    if len(wanted) > MAX_RULE_CHANNELS:
        raise InvalidInput(
            f"channel_ids: at most {MAX_RULE_CHANNELS} channels", details={"field": "channel_ids"}
        )
    live = await repository.live_channel_ids(session, org_id, wanted)
    for channel_id in wanted:
        if channel_id not in live:
            raise NotFound(
                f"channel_ids: {channel_id!r} is not a channel of this organization (or it was "
                "deleted)",
                details={"field": "channel_ids", "channel_id": channel_id},
            )
    return wanted


def _has_audience(rule: AlertRule) -> None:
    recipients = rule.recipients
    if not (
        rule.channel_ids
        or recipients.get("key_owner")
        or recipients.get("scope_admins")
        or recipients.get("user_ids")
    ):
        raise InvalidInput(
            "channel_ids: a rule needs at least one channel or recipient (recipients.key_owner, "
            "recipients.scope_admins or recipients.user_ids)",
            details={"field": "channel_ids"},
        )


def _invalid(field: str, exc: ValidationError, context: str = "") -> InvalidInput:
    """The first problem pydantic found, named as the API names the field."""
    error = exc.errors()[0]
    name = ".".join([field, *(str(part) for part in error["loc"])])
    rule = str(error["msg"]).removeprefix("Value error, ")
    return InvalidInput(f"{name}: {rule}{context}", details={"field": name})


async def _record_rule(
    session: AsyncSession,
    actor: Actor,
    access: OrgAccess,
    action: str,
    rule: AlertRule,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """A rule's events sit at its scope group, so the admins of that subtree see them."""
    await record_action(
        session,
        actor,
        org_id=access.org_id,
        action=action,
        target_type="alert_rule",
        target_id=rule.id,
        group_id=rule.scope_group_id or access.root[0],
        before=before,
        after=after,
    )
