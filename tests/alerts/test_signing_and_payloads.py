"""The pieces of an alert delivery: the webhook signature (a receiver's check of it included),
each channel's body within its receiver's documented shape and limits, and a mail's subject,
text and headers (no header added by any title)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy

import orjson
from hypothesis import given
from hypothesis import strategies as st

from sluicegate.alerts import payloads as p
from sluicegate.alerts.mailer import alert_message
from sluicegate.alerts.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    new_secret,
    sign,
    verify,
)
from sluicegate.smtp_url import SmtpServer

NOW = 1_764_892_800
BODY = b'{"event":"budget.threshold","threshold":90}'


def test_a_signed_delivery_verifies_with_its_secret_and_only_with_it() -> None:
    secret = new_secret()
    headers = sign([secret], NOW, BODY)
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    assert headers[SIGNATURE_HEADER].startswith("v1=")
    stamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(secret, stamp, signature, BODY, now=NOW + 1)
    assert not verify(new_secret(), stamp, signature, BODY, now=NOW + 1)
    assert not verify(secret, stamp, signature, BODY + b" ", now=NOW + 1)  # body changed
    assert not verify(secret, str(NOW + 1), signature, BODY, now=NOW + 1)  # timestamp changed
    assert not verify(secret, None, signature, BODY, now=NOW)
    assert not verify(secret, "soon", signature, BODY, now=NOW)


def test_a_delivery_older_or_newer_than_five_minutes_is_refused_as_a_replay() -> None:
    secret = new_secret()
    headers = sign([secret], NOW, BODY)
    stamp, signature = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    assert verify(secret, stamp, signature, BODY, now=NOW + 300)
    assert not verify(secret, stamp, signature, BODY, now=NOW + 301)
    assert not verify(secret, stamp, signature, BODY, now=NOW - 301)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = sign([new, old], NOW, BODY)
    assert headers[SIGNATURE_HEADER].count("v1=") == 2
    for secret in (old, new):
        assert verify(secret, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], BODY, now=NOW)


@given(body=st.binary(max_size=2000), skew=st.integers(-300, 300))
def test_any_body_signed_now_verifies_within_the_window(body: bytes, skew: int) -> None:
    secret = "whsec_fixed-for-the-property"
    headers = sign([secret], NOW, body)
    assert verify(
        secret, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body, now=NOW + skew
    )


# --- channel bodies ------------------------------------------------------------------------------

texts = st.text(max_size=7000)
alerts = st.builds(
    p.Alert,
    id=st.just("alr_1"),
    event=st.sampled_from(["budget.threshold", "credit.low", "key.created"]),
    severity=st.sampled_from(["info", "warning", "critical"]),
    title=texts,
    text=texts,
    org_id=st.just("org_1"),
    occurred_at=st.just(datetime(2026, 12, 4, 12, 0, tzinfo=UTC)),
    fields=st.lists(st.tuples(st.text(max_size=400), st.text(max_size=3000)), max_size=30).map(
        tuple
    ),
)


@given(alerts)
def test_slack_messages_stay_within_block_kit_limits(alert: p.Alert) -> None:
    body = orjson.loads(p.slack_body(alert))
    assert isinstance(body["text"], str) and len(body["text"]) <= p.SLACK_TEXT
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header" and blocks[0]["text"]["type"] == "plain_text"
    assert len(blocks[0]["text"]["text"]) <= p.SLACK_HEADER
    for block in blocks[1:]:
        assert block["type"] in ("section", "context")
        if block["type"] == "section" and "text" in block:
            assert block["text"]["type"] == "mrkdwn"
            assert len(block["text"]["text"]) <= p.SLACK_TEXT
        if "fields" in block:
            assert 1 <= len(block["fields"]) <= p.SLACK_FIELDS
            assert all(len(f["text"]) <= p.SLACK_FIELD for f in block["fields"])
        if block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10


def test_slack_text_cannot_mention_a_channel() -> None:
    alert = p.Alert(
        "alr_1",
        "key.created",
        "info",
        "Key <!channel> created",
        "by <@U123> & co",
        "org_1",
        datetime(2026, 12, 4, tzinfo=UTC),
        (("Key", "<!here>"),),
    )
    body = orjson.loads(p.slack_body(alert))
    # Slack acts on mentions in mrkdwn (the fallback text, sections, context); a header is
    # plain_text, which it shows as written.
    assert body["blocks"][0]["text"] == {"type": "plain_text", "text": "Key <!channel> created"}
    formatted = [body["text"]] + [
        piece["text"]
        for block in body["blocks"][1:]
        for piece in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        if piece
    ]
    assert all("<" not in text and ">" not in text for text in formatted)
    assert "Key &lt;!channel&gt; created" == body["text"]
    assert any("&lt;!here&gt;" in text for text in formatted)
    assert any("&amp; co" in text for text in formatted)


@given(alerts)
def test_discord_embeds_stay_within_their_limits_and_ping_nobody(alert: p.Alert) -> None:
    body = orjson.loads(p.discord_body(alert))
    assert body["allowed_mentions"] == {"parse": []}
    (embed,) = body["embeds"]
    assert len(embed["title"]) <= p.DISCORD_TITLE
    assert len(embed.get("description", "")) <= p.DISCORD_DESCRIPTION
    assert len(embed["fields"]) <= p.DISCORD_FIELDS
    for item in embed["fields"]:
        assert 1 <= len(item["name"]) <= p.DISCORD_FIELD_NAME
        assert 1 <= len(item["value"]) <= p.DISCORD_FIELD_VALUE
    assert len(embed["footer"]["text"]) <= p.DISCORD_FOOTER
    total = len(embed["title"]) + len(embed.get("description", "")) + len(embed["footer"]["text"])
    total += sum(len(i["name"]) + len(i["value"]) for i in embed["fields"])
    assert total <= p.DISCORD_EMBED_TOTAL
    assert embed["color"] == p.DISCORD_COLOURS[alert.severity]
    assert datetime.fromisoformat(embed["timestamp"]) == alert.occurred_at


def test_the_generic_webhook_body_carries_everything_as_sent() -> None:
    alert = p.Alert(
        "alr_9",
        "budget.threshold",
        "warning",
        "Budget 90% used",
        "Team A spent 90.2 of 100 USD this month.",
        "org_1",
        datetime(2026, 12, 4, 12, 30, tzinfo=UTC),
        (("Budget", "Team A monthly"),),
        {"threshold": 90, "budget_id": "bud_1"},
    )
    assert orjson.loads(p.webhook_body(alert)) == {
        "id": "alr_9",
        "event": "budget.threshold",
        "severity": "warning",
        "org_id": "org_1",
        "occurred_at": "2026-12-04T12:30:00+00:00",
        "title": "Budget 90% used",
        "text": "Team A spent 90.2 of 100 USD this month.",
        "fields": [{"name": "Budget", "value": "Team A monthly"}],
        "details": {"threshold": 90, "budget_id": "bud_1"},
    }


# --- mail ---------------------------------------------------------------------------------------

MAIL_SERVER = SmtpServer(
    host="mail.example.com",
    port=465,
    implicit_tls=True,
    starttls=False,
    sender_name="Sluicegate",
    sender_address="alerts@example.com",
)
MAIL_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Auto-Submitted",
    "X-Sluicegate-Delivery",
    "X-Sluicegate-Event",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]


@given(alerts)
def test_a_mail_has_a_one_line_subject_of_200_characters_and_its_headers_only(
    alert: p.Alert,
) -> None:
    subject = p.email_subject(alert)
    assert subject.startswith("[Sluicegate] ") and len(subject) <= p.EMAIL_SUBJECT
    assert len(subject.splitlines()) == 1 and not any(ord(c) < 32 for c in subject)
    message = alert_message(
        MAIL_SERVER, ["ops@example.com"], alert, delivery_id="dlv_1", now=datetime.now(UTC)
    )
    parsed = message_from_bytes(message.as_bytes(policy=policy.SMTP), policy=policy.default)
    assert parsed.keys() == MAIL_HEADERS
    # Python's folding of long non-ASCII headers may drop a space between encoded words.
    assert parsed["Subject"].split() == subject.split() or (
        "".join(parsed["Subject"].split()) == "".join(subject.split())
    )
    assert parsed["Message-ID"] == "<dlv_1@sluicegate>"


def test_a_mails_text_has_the_fields_as_lines_and_what_when_and_where() -> None:
    alert = p.Alert(
        id="alt_1",
        event="budget.threshold",
        severity="warning",
        title="Budget at 90%: key prod",
        text="The monthly budget of key prod has reached 90%.",
        org_id="org_1",
        occurred_at=datetime(2026, 12, 4, 13, 30, tzinfo=timezone(timedelta(hours=1))),
        fields=(("Spent", "$9.00"), ("Scope", "key pr\nod")),
    )
    assert p.email_text(alert) == (
        "The monthly budget of key prod has reached 90%.\n"
        "\n"
        "Spent: $9.00\n"
        "Scope: key pr od\n"
        "\n"
        "Event: budget.threshold\n"
        "Severity: warning\n"
        "Time: 2026-12-04 12:30:00 UTC\n"
        "Organization: org_1\n"
        "Alert: alt_1\n"
    )
    subject = p.email_subject(replace(alert, title="x" * 300))
    assert len(subject) == p.EMAIL_SUBJECT and subject.endswith("x…")
