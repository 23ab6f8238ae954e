"""Raising alerts: once per dedupe key, to the channels of the rules that match the event, its
params and its scope, with the people the rules name; and the events the services raise."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import select

from sluicegate.alerts.channel_config import channel_box, seal_config
from sluicegate.alerts.lifecycle import keys_expired
from sluicegate.alerts.models import Alert, AlertChannel, AlertDelivery, AlertRule
from sluicegate.alerts.outbox import record_crossings
from sluicegate.core.clock import utcnow
from sluicegate.core.ids import new_id
from sluicegate.core.money import usd_to_nanos
from sluicegate.guard.counters import Crossing, encode_crossings
from sluicegate.keys.service import create_key, update_key
from sluicegate.orgs.group_service import create_group
from sluicegate.runtime import Runtime
from tests.factories import Tenant, make_tenant, put_tenant_budget
from tests.proxy.conftest import usage_events

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


async def channel(runtime: Runtime, org_id: str, *, enabled: bool = True) -> str:
    channel_id = new_id("chn")
    box = channel_box(runtime.settings.secret)
    async with runtime.unit_of_work() as session:
        session.add(
            AlertChannel(
                id=channel_id,
                org_id=org_id,
                name=channel_id,
                kind="webhook",
                target_hint="http://127.0.0.1:9",
                config_sealed=seal_config(
                    box, org_id, channel_id, {"url": "http://127.0.0.1:9/", "secrets": []}
                ),
                enabled=enabled,
            )
        )
    return channel_id


async def rule(runtime: Runtime, org_id: str, event: str, channels: list[str], **extra) -> str:
    rule_id = new_id("arl")
    async with runtime.unit_of_work() as session:
        session.add(
            AlertRule(
                id=rule_id,
                org_id=org_id,
                name=rule_id,
                event=event,
                channel_ids=channels,
                params=extra.pop("params", {}),
                recipients=extra.pop("recipients", {}),
                **extra,
            )
        )
    return rule_id


async def alerts_of(runtime: Runtime, org_id: str, event: str | None = None) -> list[Alert]:
    statement = select(Alert).where(Alert.org_id == org_id).order_by(Alert.created_at)
    if event is not None:
        statement = statement.where(Alert.event == event)
    async with runtime.sessions() as session:
        return list(await session.scalars(statement))


async def deliveries_of(runtime: Runtime, alert_id: str) -> list[AlertDelivery]:
    async with runtime.sessions() as session:
        return list(
            await session.scalars(select(AlertDelivery).where(AlertDelivery.alert_id == alert_id))
        )


def crossed_event(tenant: Tenant, budget_id: str, percent: int, spent: int) -> dict:
    return {
        "org_id": tenant.org_id,
        "request_id": new_id("req"),
        "key_id": tenant.key_id,
        "created_at": utcnow(),
        "crossed": encode_crossings([Crossing(budget_id, "-", 1764547200000, percent, spent)]),
    }


async def test_a_crossing_becomes_one_alert_with_a_delivery_per_channel_and_person(
    runtime: Runtime,
) -> None:
    tenant = await make_tenant(runtime)
    budget_id = await put_tenant_budget(
        runtime, tenant, usd_to_nanos("10"), enforcement="soft", thresholds=[50, 90]
    )
    first, second = await channel(runtime, tenant.org_id), await channel(runtime, tenant.org_id)
    naming = await rule(
        runtime,
        tenant.org_id,
        "budget.threshold",
        [first, second],
        recipients={"key_owner": True, "scope_admins": True},
    )
    # The same channel and the same person again: still one delivery each.
    await rule(
        runtime,
        tenant.org_id,
        "budget.threshold",
        [first],
        recipients={"user_ids": [tenant.user_id]},
    )
    event = crossed_event(tenant, budget_id, 90, usd_to_nanos("9.5"))
    async with runtime.unit_of_work() as session:
        assert await record_crossings(session, [event]) == 1
    async with runtime.unit_of_work() as session:  # redelivered: nothing new
        assert await record_crossings(session, [{**event, "request_id": new_id("req")}]) == 0
    [alert] = await alerts_of(runtime, tenant.org_id, "budget.threshold")
    assert (alert.event, alert.severity, alert.group_id) == (
        "budget.threshold",
        "warning",
        tenant.group_id,
    )
    assert "90%" in alert.title and "$9.50 spent of $10.00" in alert.text
    assert alert.details["budget_id"] == budget_id and alert.details["percent"] == 90
    assert alert.recipient_user_ids == [tenant.user_id]  # the key's owner is also the owner
    deliveries = await deliveries_of(runtime, alert.id)
    to_channels = [d for d in deliveries if d.channel_id is not None]
    assert sorted(d.channel_id for d in to_channels) == sorted([first, second])
    assert all(d.recipient_user_id is None for d in to_channels)
    [to_person] = [d for d in deliveries if d.channel_id is None]
    assert (to_person.recipient_user_id, to_person.rule_id, to_person.status) == (
        tenant.user_id,
        naming,  # the first rule that named them
        "pending",
    )


async def test_rules_filter_by_scope_params_and_live_channels(runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    budget_id = await put_tenant_budget(
        runtime, tenant, usd_to_nanos("10"), enforcement="soft", thresholds=[50, 90]
    )
    async with runtime.unit_of_work() as session:
        other = await create_group(session, tenant.actor, tenant.org_id, name="elsewhere")
    wide, scoped, elsewhere, picky, off = [await channel(runtime, tenant.org_id) for _ in range(5)]
    disabled = await channel(runtime, tenant.org_id, enabled=False)
    await rule(runtime, tenant.org_id, "budget.threshold", [wide, disabled])
    await rule(runtime, tenant.org_id, "budget.threshold", [scoped], scope_group_id=tenant.group_id)
    await rule(runtime, tenant.org_id, "budget.threshold", [elsewhere], scope_group_id=other.id)
    await rule(runtime, tenant.org_id, "budget.threshold", [picky], params={"min_percent": 95})
    await rule(runtime, tenant.org_id, "budget.threshold", [off], enabled=False)
    await rule(runtime, tenant.org_id, "key.created", [off])
    async with runtime.unit_of_work() as session:
        await record_crossings(session, [crossed_event(tenant, budget_id, 90, usd_to_nanos(9))])
    [alert] = await alerts_of(runtime, tenant.org_id, "budget.threshold")
    assert sorted(d.channel_id for d in await deliveries_of(runtime, alert.id)) == sorted(
        [wide, scoped]
    )


async def test_threshold_alerts_through_the_proxy_fire_once_each(
    runtime: Runtime, proxy_client: httpx.AsyncClient
) -> None:
    """Concurrent requests past 50% and 90% of a key's budget: one alert per threshold, on the
    in-process counters (embedded) and through the Lua settle and the drain (Postgres)."""
    tenant = await make_tenant(runtime)
    headers = {"authorization": f"Bearer {tenant.key}"}
    assert (await proxy_client.post("/v1/chat/completions", json=CHAT, headers=headers)).is_success
    first_cost = await _spent(runtime, tenant, proxy_client)
    assert first_cost > 0
    # A limit 20 requests' worth: the next 20 concurrent requests cross 50% and 90%.
    await put_tenant_budget(
        runtime,
        tenant,
        usd_to_nanos(str(first_cost * 20 / 1e9)),
        enforcement="soft",
        thresholds=[50, 90],
    )
    answers = await asyncio.gather(
        *(proxy_client.post("/v1/chat/completions", json=CHAT, headers=headers) for _ in range(24))
    )
    assert all(answer.status_code == 200 for answer in answers)
    for _ in range(100):
        found = await alerts_of(runtime, tenant.org_id, "budget.threshold")
        if len(found) >= 2:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # a duplicate would show up by now
    found = await alerts_of(runtime, tenant.org_id, "budget.threshold")
    assert sorted(a.details["percent"] for a in found) == [50, 90]


async def _spent(runtime: Runtime, tenant: Tenant, client: httpx.AsyncClient) -> int:
    """The cost of the org's usage so far, once stored."""
    rows = await usage_events(runtime, tenant.org_id, expect=1)
    return sum(row.cost_nusd for row in rows)


async def test_key_and_member_events_are_raised_by_the_services(runtime: Runtime) -> None:
    tenant = await make_tenant(runtime)
    now = runtime.clock.now()
    async with runtime.unit_of_work() as session:
        key, _ = await create_key(
            session,
            tenant.actor,
            tenant.org_id,
            pepper=runtime.settings.secret,
            group_id=tenant.group_id,
            name="short-lived",
            expires_at=now + timedelta(seconds=1),
            now=now,
        )
    async with runtime.unit_of_work() as session:
        await update_key(session, tenant.actor, tenant.org_id, key.id, {"status": "disabled"}, now)
    async with runtime.unit_of_work() as session:  # disabled again: no change, no alert
        await update_key(session, tenant.actor, tenant.org_id, key.id, {"status": "disabled"}, now)
    later = now + timedelta(seconds=2)
    async with runtime.unit_of_work() as session:
        assert await keys_expired(session, later) >= 1
    async with runtime.unit_of_work() as session:
        assert await keys_expired(session, later) == 0  # once per key and expiry
    events = [
        a.event
        for a in await alerts_of(runtime, tenant.org_id)
        if a.details.get("key_id") == key.id
    ]
    assert sorted(events) == ["key.created", "key.disabled", "key.expired"]
