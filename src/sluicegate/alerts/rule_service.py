"""The rules of alert rules: a rule names an event, a scope, its params and who hears of it, all
checked against the org.

Who may do what (orgs.authorize): a rule is read by whoever reads its scope node (the org root
when it has no group) and managed by the owners and admins covering it, on both ends of a move.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from sluicegate.alerts import repository
from sluicegate.alerts.models import EVENTS, AlertRule
from sluicegate.alerts.schemas import (
    EVENT_PARAMS,
    MAX_RULE_CHANNELS,
    Recipients,
)
from sluicegate.audit.service import record_action
from sluicegate.core.actors import Actor
from sluicegate.core.errors import InvalidInput, NotFound
from sluicegate.core.ids import new_id
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
