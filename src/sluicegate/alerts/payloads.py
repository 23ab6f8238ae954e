"""What one alert looks like on each kind of channel: the generic webhook's JSON, a Slack
incoming webhook's Block Kit message, a Discord webhook's embed, and a mail's subject and plain
text. Pure functions; text set by org members (names of keys, groups, budgets) goes into them,
so each is cut to the receiver's documented limits and cannot ping anyone, and a mail's subject
is one line whatever the names hold (no header can be smuggled in after a line break).

Limits as documented by the receivers:
- Slack (api.slack.com/reference/block-kit/blocks): at most 50 blocks; a header's plain_text
  150 characters; a section's text 3,000; at most 10 section fields of 2,000 each; a context
  block at most 10 elements. `&`, `<` and `>` are escaped in mrkdwn, as Slack asks, so a name
  like `<!channel>` is shown, not acted on.
- Discord (discord.com/developers/docs/resources/message#embed-object-embed-limits): title 256,
  description 4,096, at most 25 fields (name 256, value 1,024), footer 2,048, all of an embed's
  text together 6,000; `allowed_mentions` with an empty `parse` list, so no @everyone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Severity = Literal["info", "warning", "critical"]

SLACK_HEADER = 150
SLACK_TEXT = 3000
SLACK_FIELDS = 10
SLACK_FIELD = 2000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FOOTER = 2048
DISCORD_EMBED_TOTAL = 6000
# A mail's subject: the prefix mail filters sort on, and a length every client shows whole.
EMAIL_SUBJECT_PREFIX = "[Sluicegate] "
EMAIL_SUBJECT = 200
# Control characters (C0, DEL and C1), but the line feed and tab a mail's text keeps.
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Embed side colours: blue, amber, red.
DISCORD_COLOURS: dict[str, int] = {"info": 0x3B82F6, "warning": 0xF59E0B, "critical": 0xDC2626}
_SLACK_ICONS = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    event: str  # e.g. "budget.threshold"
    severity: Severity
    title: str
    text: str
    org_id: str
    occurred_at: datetime  # timezone-aware
    fields: tuple[tuple[str, str], ...] = ()  # (label, value), in display order
    details: dict[str, Any] = field(default_factory=dict)  # machine-readable, webhook only


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def webhook_body(alert: Alert) -> bytes:
    return orjson.dumps(
        {
            "id": alert.id,
            "event": alert.event,
            "severity": alert.severity,
            "org_id": alert.org_id,
            "occurred_at": alert.occurred_at.isoformat(),
            "title": alert.title,
            "text": alert.text,
            "fields": [{"name": name, "value": value} for name, value in alert.fields],
            "details": alert.details,
        }
    )


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_text(text: str, limit: int) -> str:
    """Escaped, then cut so that the escaped form fits (escaping lengthens)."""
    escaped = _slack_escape(text)
    while len(escaped) > limit:
        text = text[: max(0, len(text) - (len(escaped) - limit) - 1)]
        escaped = _slack_escape(text) + "…"
    return escaped


def slack_body(alert: Alert) -> bytes:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(alert.title, SLACK_HEADER)}}
    ]
    if alert.text:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_text(alert.text, SLACK_TEXT)},
            }
        )
    shown = alert.fields[:SLACK_FIELDS]
    if shown:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {
                        "type": "mrkdwn",
                        # Bold label (at most 200), a line break, the value: within 2,000.
                        "text": f"*{_slack_text(name, 200)}*\n"
                        f"{_slack_text(value, SLACK_FIELD - 203)}",
                    }
                    for name, value in shown
                ],
            }
        )
    context = f"{_SLACK_ICONS[alert.severity]} {alert.event} · {alert.occurred_at.isoformat()}"
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": _slack_text(context, SLACK_TEXT)}],
        }
    )
    # `text` is what notifications and clients without blocks show.
    return orjson.dumps({"text": _slack_text(alert.title, SLACK_TEXT), "blocks": blocks})


def discord_body(alert: Alert) -> bytes:
    title = _cut(alert.title, DISCORD_TITLE)
    footer = _cut(alert.event, DISCORD_FOOTER)
    budget = DISCORD_EMBED_TOTAL - len(title) - len(footer)
    fields = []
    for name, value in alert.fields[:DISCORD_FIELDS]:
        name, value = _cut(name or "-", DISCORD_FIELD_NAME), _cut(value or "-", DISCORD_FIELD_VALUE)
        if len(name) + len(value) > budget:
            break
        budget -= len(name) + len(value)
        fields.append({"name": name, "value": value, "inline": True})
    description = _cut(alert.text, min(DISCORD_DESCRIPTION, budget)) if budget > 0 else ""
    embed: dict[str, Any] = {
        "title": title,
        "color": DISCORD_COLOURS[alert.severity],
        "timestamp": alert.occurred_at.isoformat(),
        "footer": {"text": footer},
        "fields": fields,
    }
    if description:
        embed["description"] = description
    return orjson.dumps({"embeds": [embed], "allowed_mentions": {"parse": []}})


def _one_line(text: str) -> str:
    """Every run of whitespace, line breaks of any kind included (CR, LF, U+2028, ...), made one
    space, and what control characters remain dropped."""
    return _CONTROL.sub("", " ".join(text.split()))


def email_subject(alert: Alert) -> str:
    return _cut(EMAIL_SUBJECT_PREFIX + _one_line(alert.title), EMAIL_SUBJECT)


def email_text(alert: Alert) -> str:
    """The alert's text, its fields as `Label: value` lines, then what it is and when."""
    lines = []
    text = _TEXT_CONTROL.sub("", alert.text.replace("\r\n", "\n")).strip()
    if text:
        lines += [text, ""]
    if alert.fields:
        lines += [f"{_one_line(name)}: {_one_line(value)}" for name, value in alert.fields]
        lines.append("")
    lines += [
        f"Event: {alert.event}",
        f"Severity: {alert.severity}",
        f"Time: {alert.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
        f"Organization: {alert.org_id}",
        f"Alert: {alert.id}",
    ]
    return "\n".join(lines) + "\n"
