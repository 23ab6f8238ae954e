"""A gateway logging at debug through a whole scenario (keys, proxied calls, an invitation sent
and accepted, a webhook channel and an email channel behind an SMTP login, each delivering its
alert) writes none of the secrets it handled: not the API key, the admin and session tokens, the
invitation token, the webhook's URL or signing secret, the SMTP password, nor the provider's API
key."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import httpx

from sluicegate.runtime import Runtime
from sluicegate.settings import Settings
from tests.alerts.mailbox import running_mailbox
from tests.alerts.receiver import running_receiver
from tests.alerts.test_acceptance import (
    alert_env,
    cross_ninety_percent,
    governed,
    ok,
    threshold_deliveries,
    wait_for,
)
from tests.conftest import GatewayStarter
from tests.proxy.conftest import MOCK_KEY_ENV


async def test_a_full_scenario_at_debug_level_logs_no_secret(
    settings: Settings,
    runtime: Runtime,
    providers_file: Path,
    start_gateway: GatewayStarter,
) -> None:
    smtp_password = secrets.token_urlsafe(12)
    with running_mailbox(authenticator=("alerts", smtp_password), auth_require_tls=False) as (
        mailbox,
        smtp_port,
    ):
        async with running_receiver() as receiver:
            env = alert_env(
                settings,
                providers_file,
                SLUICEGATE_LOG_LEVEL="debug",
                # A relay on loopback without TLS, with a login: allowed on loopback only.
                SLUICEGATE_SMTP_URL=(
                    f"smtp://alerts:{smtp_password}@127.0.0.1:{smtp_port}?starttls=false"
                ),
                SLUICEGATE_SMTP_FROM="alerts@example.com",
            )
            gateway = start_gateway(env=env)
            world = await governed(runtime, gateway, receiver.url)
            try:
                mail = {"name": "mail", "kind": "email", "to": ["ops@example.com"]}
                channel = ok(
                    await world.admin.post(f"{world.base}/alerts/channels", json=mail), 201
                )
                rule = {
                    "name": "budget mail",
                    "event": "budget.threshold",
                    "channel_ids": [channel["id"]],
                }
                ok(await world.admin.post(f"{world.base}/alerts/rules", json=rule), 201)
                group = ok(await world.admin.get(f"{world.base}/groups"))["items"][0]
                invited = {
                    "email": "invitee@example.com",
                    "role": "member",
                    "group_id": group["id"],
                }
                invitation = ok(
                    await world.admin.post(f"{world.base}/invitations", json=invited), 201
                )
                password = secrets.token_urlsafe(16)
                async with httpx.AsyncClient(base_url=gateway.base_url, timeout=15) as anonymous:
                    accepted = ok(
                        await anonymous.post(
                            f"/api/v1/invitations/{invitation['token']}/accept",
                            json={"name": "Invitee", "password": password},
                        )
                    )
                await cross_ninety_percent(world, gateway.base_url)
                await wait_for(receiver, 1, 30)
                assert threshold_deliveries(receiver)
                deadline = time.monotonic() + 30
                while not mailbox.delivered:
                    assert time.monotonic() < deadline, "the alert mail never arrived"
                    await asyncio.sleep(0.1)
                # One SMTP connection per attempt to send a mail (one that timed out on a busy
                # machine is tried again): each logged in with the configured credentials.
                assert mailbox.logins
                assert set(mailbox.logins) == {("alerts", smtp_password)}
                admin_token = world.admin.headers["authorization"].removeprefix("Bearer ")
            finally:
                await world.admin.aclose()
    logged = gateway.log()
    assert "/v1/chat/completions" in logged and "invitations" in logged  # it did log the calls
    handled = {
        "API key": world.key,
        "admin token": admin_token,
        "invitation token": invitation["token"],
        "session token": accepted["token"],
        "password": password,
        "webhook URL": receiver.url,
        "webhook signing secret": world.signing_secret,
        "SMTP password": smtp_password,
        "provider API key": next(iter(MOCK_KEY_ENV.values())),
    }
    leaked = [name for name, secret in handled.items() if secret in logged]
    assert not leaked, f"in the gateway's log: {leaked}"
