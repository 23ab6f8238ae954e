"""Alert channels over the admin API: CRUD, a signing secret shown once and rotated with a day's
overlap, URLs checked for their kind and against SSRF (every resolved address public, unless
the operator allows the network), nothing of a channel's config ever shown or stored in the
clear, who may read and change channels, and another tenant's channels answering 404.

Names are resolved by a resolver of the test's own (`FakeResolver`, put in the app's state where
the routes look for it): the machine has no DNS for hooks.slack.com or discord.com.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from sluicegate.alerts import channel_service
from sluicegate.alerts.channel_config import (
    channel_box,
    open_config,
    seal_config,
    signing_secrets,
)
from sluicegate.alerts.channel_service import SECRET_OVERLAP
from sluicegate.alerts.models import Alert, AlertChannel, AlertDelivery
from sluicegate.alerts.routes import EGRESS_RESOLVER
from sluicegate.app import create_app
from sluicegate.core.ids import new_id
from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.admin import Api, all_pages, error, ok
from tests.alerts.receiver import running_receiver
from tests.factories import Org, join, make_org

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"
DISCORD_URL = "https://discord.com/api/webhooks/123456789/abcdefTOKEN"
WEBHOOK_URL = "https://alerts.example.com/hooks/sluicegate?token=hush-hush-123"


@dataclass
class FakeResolver:
    """Names to addresses, as DNS would answer; a name it does not know does not resolve."""

    names: dict[str, list[str]] = field(
        default_factory=lambda: {
            "hooks.slack.com": ["54.164.10.7"],
            "discord.com": ["162.159.128.233"],
            "discordapp.com": ["162.159.135.232"],
            "alerts.example.com": ["93.184.215.14"],
            "other.example.com": ["93.184.215.15"],
            "internal.example.com": ["10.20.30.40"],
            "split.example.com": ["93.184.215.14", "192.168.1.4"],
            "localhost": ["127.0.0.1", "::1"],
        }
    )
    asked: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering, as a DNS server that does not answer

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        await asyncio.sleep(self.delay)
        if host not in self.names:
            raise OSError(f"{host} does not resolve")
        return self.names[host]


async def new_channel(api: Api, org: Org, **fields: Any) -> dict[str, Any]:
    body = {"name": f"channel-{secrets.token_hex(4)}", "kind": "webhook", "url": WEBHOOK_URL}
    return dict(ok(await api.post(org.channels, json={**body, **fields}), 201))


def public(channel: dict[str, Any]) -> dict[str, Any]:
    """What a GET shows of a channel: its creation answer without the secret fields."""
    return {
        k: v
        for k, v in channel.items()
        if k not in ("signing_secret", "previous_secret_expires_at")
    }


async def stored_config(runtime: Runtime, channel_id: str) -> tuple[AlertChannel, dict]:
    async with runtime.sessions() as session:
        row = await session.get(AlertChannel, channel_id)
        assert row is not None
        config = open_config(
            channel_box(runtime.settings.secret), row.org_id, row.id, row.config_sealed
        )
        return row, config


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
async def client(
    settings: Settings, runtime: Runtime, resolver: FakeResolver
) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, resolving names with the test's resolver."""
    app = create_app(settings, runtime)
    setattr(app.state, EGRESS_RESOLVER, resolver)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


@pytest.fixture
async def org(runtime: Runtime, client: httpx.AsyncClient) -> Org:
    return await make_org(runtime, client, levels=2)


# --- CRUD --------------------------------------------------------------------------------------


async def test_a_webhook_channel_is_created_read_listed_changed_and_deleted(org: Org) -> None:
    created = await new_channel(org.owner, org, name="On-call")
    assert created["id"].startswith("chn_")
    assert created["name"] == "On-call" and created["kind"] == "webhook"
    assert created["target"] == "https://alerts.example.com"
    assert created["enabled"] is True
    assert created["signing_secret"].startswith("whsec_")
    assert created["previous_secret_expires_at"] is None
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None
    path = f"{org.channels}/{created['id']}"
    assert ok(await org.owner.get(path)) == public(created)

    others = [await new_channel(org.owner, org) for _ in range(3)]
    listed = await all_pages(org.owner, org.channels, {"limit": 2})
    assert [c["id"] for c in listed] == [created["id"], *(c["id"] for c in others)]

    changed = ok(
        await org.owner.patch(
            path,
            json={"name": "Pager", "enabled": False, "url": "https://other.example.com:8443/x"},
        )
    )
    assert changed["name"] == "Pager" and changed["enabled"] is False
    assert changed["target"] == "https://other.example.com:8443"
    assert "signing_secret" not in changed
    assert changed["updated_at"] >= created["updated_at"]
    # Fields not sent keep their values.
    kept = ok(await org.owner.patch(path, json={"name": "Pager 2"}))
    assert (kept["enabled"], kept["target"]) == (False, "https://other.example.com:8443")

    assert (await org.owner.delete(path)).status_code == 204
    assert error(await org.owner.get(path), 404)["code"] == "not_found"
    error(await org.owner.patch(path, json={"name": "again"}), 404)
    error(await org.owner.post(f"{path}/rotate-secret"), 404)
    error(await org.owner.delete(path), 404)
    listed = await all_pages(org.owner, org.channels)
    assert created["id"] not in [c["id"] for c in listed]


async def test_a_changed_url_keeps_the_webhooks_signing_secret(org: Org, runtime: Runtime) -> None:
    created = await new_channel(org.owner, org)
    ok(
        await org.owner.patch(
            f"{org.channels}/{created['id']}", json={"url": "https://other.example.com/new"}
        )
    )
    _row, config = await stored_config(runtime, created["id"])
    assert config["url"] == "https://other.example.com/new"
    assert [entry["secret"] for entry in config["secrets"]] == [created["signing_secret"]]


async def test_slack_and_discord_channels_have_no_signing_secret(
    org: Org, runtime: Runtime, resolver: FakeResolver
) -> None:
    slack = await new_channel(org.owner, org, kind="slack", url=SLACK_URL)
    assert slack["signing_secret"] is None and slack["target"] == "https://hooks.slack.com"
    discord = await new_channel(org.owner, org, kind="discord", url=DISCORD_URL)
    assert discord["signing_secret"] is None and discord["target"] == "https://discord.com"
    legacy = "https://discordapp.com/api/webhooks/1/token"
    assert (await new_channel(org.owner, org, kind="discord", url=legacy))["target"] == (
        "https://discordapp.com"
    )
    # Their hosts were resolved (by the test's resolver) and found public.
    assert {"hooks.slack.com", "discord.com", "discordapp.com"} <= set(resolver.asked)
    _row, config = await stored_config(runtime, slack["id"])
    assert config == {"url": SLACK_URL}
    for channel in (slack, discord):
        problem = error(await org.owner.post(f"{org.channels}/{channel['id']}/rotate-secret"), 422)
        assert "only webhook channels" in problem["message"]


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("slack", "http://hooks.slack.com/services/T000/B000/XXXX"),
        ("slack", "https://hooks.slack.com.evil.example/services/T000/B000/XXXX"),
        ("slack", "https://alerts.example.com/services/T000/B000/XXXX"),
        ("slack", "https://hooks.slack.com/"),
        ("slack", "https://hooks.slack.com:8443/services/T000/B000/XXXX"),
        ("discord", "https://discord.com/channels/1/2"),
        ("discord", "http://discord.com/api/webhooks/1/token"),
        ("discord", "https://discord.gg/api/webhooks/1/token"),
        ("discord", "https://discord.com/api/webhooks/"),
        ("discord", "https://hooks.slack.com/api/webhooks/1/token"),
    ],
)
async def test_slack_and_discord_urls_must_be_their_incoming_webhooks(
    org: Org, kind: str, url: str
) -> None:
    problem = error(
        await org.owner.post(org.channels, json={"name": "c", "kind": kind, "url": url}), 422
    )
    assert problem["details"]["field"] == "url"
    assert ("Slack" if kind == "slack" else "Discord") in problem["message"]
    assert await all_pages(org.owner, org.channels) == []


async def test_a_slack_channel_cannot_be_pointed_elsewhere(org: Org) -> None:
    slack = await new_channel(org.owner, org, kind="slack", url=SLACK_URL)
    path = f"{org.channels}/{slack['id']}"
    problem = error(await org.owner.patch(path, json={"url": WEBHOOK_URL}), 422)
    assert problem["details"]["field"] == "url"
    assert ok(await org.owner.get(path))["target"] == "https://hooks.slack.com"


async def test_email_channels_need_an_smtp_server_configured(org: Org) -> None:
    problem = error(
        await org.owner.post(
            org.channels, json={"name": "mail", "kind": "email", "to": ["ops@example.com"]}
        ),
        422,
    )
    assert problem["details"]["field"] == "kind"
    assert "no SMTP server is configured" in problem["message"]
    assert "SLUICEGATE_SMTP_URL" in problem["message"]
    assert ok(await org.owner.get(org.channels))["items"] == []


# --- SSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "127.0.0.1"),
        ("http://10.1.2.3/hook", "10.1.2.3"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]:8080/hook", "::1"),
        ("http://localhost:8080/hook", "127.0.0.1"),
        ("https://internal.example.com/hook", "10.20.30.40"),
        ("https://split.example.com/hook", "192.168.1.4"),
        ("https://nowhere.example.com/hook", "cannot be resolved"),
        ("ftp://alerts.example.com/hook", "http:// or https://"),
        ("not a url", "http:// or https://"),
    ],
)
async def test_urls_that_may_not_be_called_are_422_naming_the_reason(
    org: Org, url: str, reason: str
) -> None:
    problem = error(
        await org.owner.post(org.channels, json={"name": "c", "kind": "webhook", "url": url}), 422
    )
    assert problem["details"]["field"] == "url"
    assert problem["message"].startswith("url: ")
    assert reason in problem["message"]
    assert await all_pages(org.owner, org.channels) == []


async def test_a_private_url_is_refused_on_change_too(org: Org, runtime: Runtime) -> None:
    created = await new_channel(org.owner, org)
    path = f"{org.channels}/{created['id']}"
    problem = error(await org.owner.patch(path, json={"url": "http://10.0.0.1/x"}), 422)
    assert problem["details"]["field"] == "url"
    _row, config = await stored_config(runtime, created["id"])
    assert config["url"] == WEBHOOK_URL


async def test_urls_longer_than_2000_characters_are_422(org: Org) -> None:
    url = "https://alerts.example.com/" + "a" * 2000
    problem = error(
        await org.owner.post(org.channels, json={"name": "c", "kind": "webhook", "url": url}), 422
    )
    assert problem["details"]["field"] == "url"


async def test_a_resolver_that_hangs_is_422_not_a_hung_request(
    org: Org, resolver: FakeResolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver.delay = 60.0
    monkeypatch.setattr(channel_service, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    body = {"name": "c", "kind": "webhook", "url": WEBHOOK_URL}
    problem = error(await org.owner.post(org.channels, json=body), 422)
    assert problem["details"] == {"field": "url"}
    assert "did not resolve within" in problem["message"]


async def test_the_system_resolver_is_used_when_none_is_set(
    runtime: Runtime, app_client: httpx.AsyncClient
) -> None:
    org = await make_org(runtime, app_client, levels=2)
    body = {"name": "c", "kind": "webhook", "url": "http://localhost:9/hook"}
    problem = error(await org.owner.post(org.channels, json=body), 422)
    assert "127.0.0.1" in problem["message"] or "::1" in problem["message"]


class TestWhenTheOperatorAllowsLoopback:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"outbound_allowed_networks": "127.0.0.0/8"})

    async def test_loopback_urls_are_accepted_and_other_private_ones_still_refused(
        self, org: Org
    ) -> None:
        created = await new_channel(org.owner, org, url="http://127.0.0.1:9/hook")
        assert created["target"] == "http://127.0.0.1:9"
        for refused in ("http://[::1]:9/hook", "http://10.1.2.3/hook", "http://localhost:9/x"):
            body = {"name": "c", "kind": "webhook", "url": refused}
            assert error(await org.owner.post(org.channels, json=body), 422)["details"] == {
                "field": "url"
            }

    async def test_test_send_resolves_with_the_apps_resolver_and_keeps_the_host(
        self, org: Org, resolver: FakeResolver
    ) -> None:
        """A name only the app's resolver knows: the test-send reaches the receiver at the
        address that resolver gave, with the URL's host in the Host header."""
        async with running_receiver() as receiver:
            resolver.names["receiver.test"] = ["127.0.0.1"]
            url = f"http://receiver.test:{receiver.port}/hook"
            created = await new_channel(org.owner, org, url=url)
            sent = ok(await org.owner.post(f"{org.channels}/{created['id']}/test"))
            assert sent["delivered"] is True, sent
            [request] = receiver.requests
            assert request.headers["host"] == f"receiver.test:{receiver.port}"
            assert request.headers["x-sluicegate-event"] == "test"


# --- secrets -----------------------------------------------------------------------------------


async def test_nothing_of_a_channels_config_is_shown_or_stored_in_the_clear(
    org: Org, runtime: Runtime
) -> None:
    created = await new_channel(org.owner, org)
    first = created["signing_secret"]
    path = f"{org.channels}/{created['id']}"
    second = ok(await org.owner.post(f"{path}/rotate-secret"))["signing_secret"]
    slack = await new_channel(org.owner, org, kind="slack", url=SLACK_URL)
    ok(await org.owner.patch(path, json={"name": "renamed"}))
    hidden = [first, second, "hush-hush-123", "/hooks/sluicegate", "/services/T000", "XXXXXXXX"]
    seen = [
        await org.owner.get(org.channels),
        await org.owner.get(path),
        await org.owner.get(f"{org.channels}/{slack['id']}"),
        await org.owner.patch(path, json={"enabled": True}),
        await org.owner.get(f"{org.base}/audit", params={"limit": 200}),
    ]
    for response in seen:
        assert response.status_code == 200, response.text
        for value in hidden:
            assert value not in response.text, (value, response.request.url)
        assert "config" not in response.text and "secrets" not in response.text
    async with runtime.sessions() as session:
        for table in ("alert_channels", "audit_events"):
            dump = repr((await session.execute(text(f"SELECT * FROM {table}"))).all())
            for value in hidden:
                assert value not in dump, (table, value)
    row, config = await stored_config(runtime, created["id"])
    assert row.config_sealed.startswith("v1.")
    assert config["url"] == WEBHOOK_URL
    assert [entry["secret"] for entry in config["secrets"]] == [second, first]


async def test_every_channel_change_is_audited_with_the_target_only(org: Org) -> None:
    created = await new_channel(org.owner, org, name="hooks")
    path = f"{org.channels}/{created['id']}"
    ok(await org.owner.patch(path, json={"name": "hooks 2"}))
    ok(await org.owner.post(f"{path}/rotate-secret"))
    assert (await org.owner.delete(path)).status_code == 204
    events = ok(await org.owner.get(f"{org.base}/audit", params={"limit": 200}))["items"]
    mine = {e["action"]: e for e in events if e["target_id"] == created["id"]}
    assert set(mine) == {
        "alert_channel.create",
        "alert_channel.update",
        "alert_channel.rotate",
        "alert_channel.delete",
    }
    assert mine["alert_channel.create"]["after"] == {
        "name": "hooks",
        "kind": "webhook",
        "target": "https://alerts.example.com",
        "enabled": True,
    }
    assert mine["alert_channel.update"]["before"]["name"] == "hooks"
    assert mine["alert_channel.update"]["after"]["name"] == "hooks 2"
    assert set(mine["alert_channel.rotate"]["after"]) == {"previous_secret_expires_at"}
    assert mine["alert_channel.delete"]["after"]["deleted"] is True


async def test_rotation_keeps_the_old_secret_for_a_day_and_drops_expired_ones(
    org: Org, runtime: Runtime
) -> None:
    created = await new_channel(org.owner, org)
    first = created["signing_secret"]
    path = f"{org.channels}/{created['id']}"
    rotated = ok(await org.owner.post(f"{path}/rotate-secret"))
    second = rotated["signing_secret"]
    assert second.startswith("whsec_") and second != first
    overlap_end = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    now = runtime.clock.now()
    assert now + SECRET_OVERLAP - timedelta(minutes=1) < overlap_end <= now + SECRET_OVERLAP
    assert public(rotated) == ok(await org.owner.get(path))

    row, config = await stored_config(runtime, created["id"])
    assert config["secrets"] == [
        {"secret": second, "expires_at": None},
        {"secret": first, "expires_at": overlap_end.isoformat()},
    ]
    assert signing_secrets(config, now) == [second, first]
    assert signing_secrets(config, overlap_end + timedelta(seconds=1)) == [second]

    # The first secret's overlap ran out (moved into the past here); the next rotation drops it.
    config["secrets"][1]["expires_at"] = (now - timedelta(seconds=1)).isoformat()
    box = channel_box(runtime.settings.secret)
    async with runtime.unit_of_work() as session:
        stored = await session.get(AlertChannel, row.id)
        assert stored is not None
        stored.config_sealed = seal_config(box, row.org_id, row.id, config)
    third = ok(await org.owner.post(f"{path}/rotate-secret"))["signing_secret"]
    _row, config = await stored_config(runtime, created["id"])
    assert [entry["secret"] for entry in config["secrets"]] == [third, second]
    assert config["secrets"][1]["expires_at"] is not None


async def test_a_config_that_no_longer_opens_is_a_conflict_not_a_crash(
    org: Org, runtime: Runtime
) -> None:
    """A sealed config is bound to its row: one copied from another channel does not open."""
    first = await new_channel(org.owner, org)
    second = await new_channel(org.owner, org)
    async with runtime.unit_of_work() as session:
        source = await session.get(AlertChannel, first["id"])
        target = await session.get(AlertChannel, second["id"])
        assert source is not None and target is not None
        target.config_sealed = source.config_sealed
    path = f"{org.channels}/{second['id']}"
    for response in (
        await org.owner.post(f"{path}/rotate-secret"),
        await org.owner.patch(path, json={"url": "https://other.example.com/x"}),
    ):
        problem = error(response, 409)
        assert "SLUICEGATE_SECRET_KEY" in problem["message"]
    assert (await org.owner.delete(path)).status_code == 204


# --- names, deletion -----------------------------------------------------------------------------


async def test_channel_names_are_unique_among_the_orgs_live_channels(org: Org) -> None:
    first = await new_channel(org.owner, org, name="ops")
    other = await new_channel(org.owner, org, name="dev")
    body = {"name": "ops", "kind": "slack", "url": SLACK_URL}
    problem = error(await org.owner.post(org.channels, json=body), 409)
    assert problem["details"] == {"field": "name"}
    rename = await org.owner.patch(f"{org.channels}/{other['id']}", json={"name": "ops"})
    assert error(rename, 409)["details"] == {"field": "name"}
    # Keeping its own name is no conflict.
    ok(await org.owner.patch(f"{org.channels}/{first['id']}", json={"name": "ops"}))
    assert (await org.owner.delete(f"{org.channels}/{first['id']}")).status_code == 204
    assert (await new_channel(org.owner, org, name="ops"))["name"] == "ops"


async def test_deleting_a_channel_cancels_its_pending_deliveries_and_spares_its_rules(
    org: Org, runtime: Runtime
) -> None:
    gone = await new_channel(org.owner, org)
    kept = await new_channel(org.owner, org, kind="slack", url=SLACK_URL)
    rule = ok(
        await org.owner.post(
            org.rules,
            json={
                "name": "budgets",
                "event": "budget.threshold",
                "channel_ids": [gone["id"], kept["id"]],
            },
        ),
        201,
    )
    deliveries = {}
    async with runtime.unit_of_work() as session:
        for label, channel_id, status in (
            ("pending", gone["id"], "pending"),
            ("delivered", gone["id"], "delivered"),
            ("other channel", kept["id"], "pending"),
        ):
            alert = Alert(
                id=new_id("alt"),
                org_id=org.id,
                event="budget.threshold",
                dedupe_key=f"test:{label}",
                severity="warning",
                title="t",
                text="t",
                occurred_at=runtime.clock.now(),
            )
            session.add(alert)
            await session.flush()
            delivery = AlertDelivery(
                id=new_id("dlv"),
                org_id=org.id,
                alert_id=alert.id,
                channel_id=channel_id,
                rule_id=rule["id"],
                status=status,
            )
            session.add(delivery)
            deliveries[label] = delivery.id
    assert (await org.owner.delete(f"{org.channels}/{gone['id']}")).status_code == 204
    async with runtime.sessions() as session:
        rows = await session.execute(
            select(AlertDelivery.id, AlertDelivery.status).where(
                AlertDelivery.id.in_(list(deliveries.values()))
            )
        )
        statuses = dict(rows.all())
    assert {label: statuses[i] for label, i in deliveries.items()} == {
        "pending": "cancelled",
        "delivered": "delivered",
        "other channel": "pending",
    }
    after = ok(await org.owner.get(f"{org.rules}/{rule['id']}"))
    assert after["channel_ids"] == [kept["id"]]
    assert after["enabled"] is True


# --- who may do what ------------------------------------------------------------------------------

ROLES = ("owner", "root admin", "team admin", "viewer", "member")
READS = {"owner": 200, "root admin": 200, "team admin": 200, "viewer": 200, "member": 403}
CHANGES = {"owner": 200, "root admin": 200, "team admin": 200, "viewer": 403, "member": 403}


async def people(org: Org) -> dict[str, Api]:
    return {
        "owner": org.owner,
        "root admin": await join(org, "admin", org.root),
        "team admin": await join(org, "admin", org.team),
        "viewer": await join(org, "viewer", org.root),
        "member": await join(org, "member", org.team),
    }


def status_of(response: httpx.Response) -> int:
    return 200 if response.status_code in (200, 201, 204) else response.status_code


async def test_channels_are_read_by_owners_admins_and_viewers_and_changed_by_owners_and_admins(
    org: Org,
) -> None:
    callers = await people(org)
    answers: dict[tuple[str, str], int] = {}
    for role in ROLES:
        api = callers[role]
        channel = await new_channel(org.owner, org)
        path = f"{org.channels}/{channel['id']}"
        answers[(role, "list")] = status_of(await api.get(org.channels))
        answers[(role, "get")] = status_of(await api.get(path))
        body = {"name": f"by {role}", "kind": "webhook", "url": WEBHOOK_URL}
        answers[(role, "create")] = status_of(await api.post(org.channels, json=body))
        answers[(role, "update")] = status_of(await api.patch(path, json={"enabled": False}))
        answers[(role, "rotate")] = status_of(await api.post(f"{path}/rotate-secret"))
        answers[(role, "delete")] = status_of(await api.delete(path))
    expected = {}
    for role in ROLES:
        for op in ("list", "get"):
            expected[(role, op)] = READS[role]
        for op in ("create", "update", "rotate", "delete"):
            expected[(role, op)] = CHANGES[role]
    assert answers == expected


async def test_a_refused_caller_learns_what_the_action_needs(org: Org) -> None:
    viewer = await join(org, "viewer", org.root)
    body = {"name": "c", "kind": "webhook", "url": WEBHOOK_URL}
    problem = error(await viewer.post(org.channels, json=body), 403)
    assert problem["code"] == "permission_denied"
    assert "owner or admin role" in problem["message"]


# --- tenants ---------------------------------------------------------------------------------


async def test_another_orgs_channels_answer_404_and_stay_as_they_were(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    a = await make_org(runtime, client, "A", levels=2)
    b = await make_org(runtime, client, "B", levels=2)
    theirs = await new_channel(b.owner, b, name="theirs")
    for path in (
        f"{a.channels}/{theirs['id']}",  # B's channel id through A's org
        f"{b.channels}/{theirs['id']}",  # B's org itself, as A's owner
    ):
        assert error(await a.owner.get(path), 404)["code"] == "not_found"
        error(await a.owner.patch(path, json={"name": "taken"}), 404)
        error(await a.owner.post(f"{path}/rotate-secret"), 404)
        error(await a.owner.delete(path), 404)
    unknown = f"{a.channels}/{new_id('chn')}"
    assert error(await a.owner.get(unknown), 404)["message"].replace(
        unknown.rsplit("/", 1)[1], "?"
    ) == error(await a.owner.get(f"{a.channels}/{theirs['id']}"), 404)["message"].replace(
        theirs["id"], "?"
    )
    error(await a.owner.get(b.channels), 404)
    body = {"name": "mine now", "kind": "webhook", "url": WEBHOOK_URL}
    error(await a.owner.post(b.channels, json=body), 404)
    assert await all_pages(a.owner, a.channels) == []
    assert ok(await b.owner.get(f"{b.channels}/{theirs['id']}")) == public(theirs)
    assert [c["id"] for c in await all_pages(b.owner, b.channels)] == [theirs["id"]]


async def test_two_live_channels_of_one_org_never_share_a_name(org: Org, runtime: Runtime) -> None:
    """The service checks names first; the database holds the rule when two creates race."""
    created = await new_channel(org.owner, org)
    again = {"name": created["name"], "kind": "webhook", "url": WEBHOOK_URL}
    assert error(await org.owner.post(org.channels, json=again), 409)

    def row(channel_id: str, deleted: bool) -> AlertChannel:
        return AlertChannel(
            id=channel_id,
            org_id=org.id,
            name=created["name"],
            kind="webhook",
            target_hint="https://example.com",
            config_sealed="v1.x",
            deleted_at=runtime.clock.now() if deleted else None,
        )

    async with runtime.unit_of_work() as session:  # a deleted channel frees its name
        session.add(row(new_id("chn"), deleted=True))
    with pytest.raises(IntegrityError):
        async with runtime.unit_of_work() as session:
            session.add(row(new_id("chn"), deleted=False))
