"""Log lines never carry a secret: access lines hide secret-looking path segments (an
invitation's token in its accept URL), outbound request lines show only the origin."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator

import httpx
import pytest

from sluicegate.core.logs import configure_logging
from sluicegate.core.request_context import logged_path


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/chat/completions", "/v1/chat/completions"),
        (
            "/api/v1/orgs/org_01m98vqkwt6n2nscvk7c4a8kjg/keys",
            "/api/v1/orgs/org_01m98vqkwt6n2nscvk7c4a8kjg/keys",
        ),
        ("/api/v1/invitations/sg-inv-abc/accept", "/api/v1/invitations/***/accept"),
        ("/v1/sk-sg-pasted-by-mistake", "/v1/***"),
        ("/hooks/Lz6nQTvx646kvllsHkEVF0ur3GHdaTSuIhwg3Doe4es", "/hooks/***"),
    ],
)
def test_secret_looking_path_segments_are_hidden(path: str, logged: str) -> None:
    assert logged_path(path) == logged


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_outbound_requests_are_logged_by_origin_only(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("debug")
    secret_path = f"/services/{secrets.token_hex(8)}"
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        client.post(f"https://hooks.example.com:8443{secret_path}?token=abc")
    logged = capsys.readouterr().err
    assert "https://hooks.example.com:8443" in logged
    assert secret_path not in logged and "token=abc" not in logged


async def test_an_invitation_token_in_the_accept_url_is_not_logged(
    app_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"sg-inv-{secrets.token_urlsafe(24)}"
    with caplog.at_level(logging.INFO, logger="sluicegate.access"):
        answer = await app_client.post(f"/api/v1/invitations/{token}/accept", json={})
    assert answer.status_code >= 400
    lines = [record.getMessage() for record in caplog.records]
    assert any("/api/v1/invitations/***/accept" in line for line in lines), lines
    assert not any(token in line for line in lines)
