"""What a channel's sealed config holds, and the one way to seal and open it.

    webhook  {"url": "https://…", "secrets": [{"secret": "whsec_…", "expires_at": null}, …]}
    slack    {"url": "https://hooks.slack.com/services/…"}
    discord  {"url": "https://discord.com/api/webhooks/…"}
    email    {"to": ["oncall@example.com", …]}

The current signing secret comes first; a rotated-out one stays with an `expires_at` (RFC 3339)
until which deliveries are signed with both. The seal is bound to "<org id>:<channel id>", so a
config copied into another row (another org) does not open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from sluicegate.core.sealing import SecretBox

PURPOSE = "sluicegate/alert-channel-config/v1"


def channel_box(secret: bytes) -> SecretBox:
    """The box for channel configs, from the instance secret (Settings.secret)."""
    return SecretBox(secret, PURPOSE)


def _context(org_id: str, channel_id: str) -> str:
    return f"{org_id}:{channel_id}"


def seal_config(box: SecretBox, org_id: str, channel_id: str, config: dict[str, Any]) -> str:
    return box.seal(orjson.dumps(config), _context(org_id, channel_id))


def open_config(box: SecretBox, org_id: str, channel_id: str, sealed: str) -> dict[str, Any]:
    """Raises core.sealing.SealBroken when the instance key changed or the row was tampered."""
    config: dict[str, Any] = orjson.loads(box.open(sealed, _context(org_id, channel_id)))
    return config


def signing_secrets(config: dict[str, Any], now: datetime) -> list[str]:
    """The secrets a webhook delivery is signed with now: current first, then any rotated-out
    one still inside its overlap."""
    found = []
    for entry in config.get("secrets", []):
        expires = entry.get("expires_at")
        if expires is None or datetime.fromisoformat(expires) > now:
            found.append(entry["secret"])
    return found


def target_hint(url: str) -> str:
    """What a channel's URL may show: scheme, host and port; the path of a Slack or Discord
    webhook is its credential, so it is never shown."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def mail_hint(count: int) -> str:
    """What an email channel may show: how many addresses, never which."""
    return f"email: {count} address" if count == 1 else f"email: {count} addresses"
