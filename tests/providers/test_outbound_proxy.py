"""The upstream pool through an outbound HTTP proxy (providers/outbound_proxy.py, proxy_tunnel.py):
a small CONNECT proxy of the test's own on loopback (tests/outbound_proxy.py), which records what
it was asked and pipes bytes both ways, in front of the mock upstream or a TLS server with a
certificate of the test's own; NO_PROXY's rules on their own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import uvloop

from sluicegate.providers.config import ProviderConfig
from sluicegate.providers.outbound_proxy import (
    OutboundProxies,
    OutboundProxy,
    parse_no_proxy,
    parse_proxy_url,
)
from sluicegate.providers.registry import upstream_pool
from sluicegate.providers.transport import (
    Pool,
    Timeouts,
    UpstreamConnectError,
    UpstreamTimeout,
)
from tests.conftest import make_settings
from tests.outbound_proxy import connect_proxy
from tests.support import ServerProcess, free_port, tls_pair

FAST = Timeouts(connect=2.0, read=2.0, write=2.0, pool=2.0)
CHAT = orjson.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
)
JSON = {"content-type": "application/json", "authorization": "Bearer test"}
PROXY_USER, PROXY_PASSWORD = "gateway", "s3cret p@ss"
# The Proxy-Authorization a proxy demanding PROXY_USER and PROXY_PASSWORD accepts.
GOOD_CREDENTIALS = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
WITH_CREDENTIALS = "http://gateway:s3cret%20p%40ss@{address}"  # PROXY_PASSWORD, percent-encoded


@asynccontextmanager
async def tls_upstream(tls: ssl.SSLContext) -> AsyncIterator[str]:
    """An https server on loopback answering every request with 200 `secured`."""
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsecured")
                await writer.drain()
        writer.close()

    listening = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    finally:
        listening.close()
        for writer in writers:
            writer.close()


def through(proxy_url: str, *, no_proxy: str = "") -> OutboundProxies:
    """Every origin through this proxy (both schemes), except what `no_proxy` excludes."""
    return OutboundProxies(
        https=parse_proxy_url(proxy_url, "HTTPS_PROXY"),
        http=parse_proxy_url(proxy_url, "HTTP_PROXY"),
        no_proxy=parse_no_proxy(no_proxy),
    )


def pool_for(base_url: str, proxies: OutboundProxies, **options: object) -> Pool:
    arguments: dict[str, object] = {
        "max_connections": 4,
        "timeouts": FAST,
        "keepalive_seconds": 30.0,
        "tls": None,
        "proxies": proxies,
    }
    return Pool(base_url, **(arguments | options))  # type: ignore[arg-type]


async def chat(pool: Pool, base_url: str) -> bytes:
    response = await pool.post(f"{base_url}/v1/chat/completions", JSON, CHAT)
    assert response.status_code == 200
    return await response.aread()


# --- through the proxy ------------------------------------------------------------------------


async def test_requests_to_the_mock_upstream_go_through_one_kept_alive_tunnel(
    mock_upstream: ServerProcess,
) -> None:
    async with connect_proxy() as proxy:
        pool = pool_for(mock_upstream.base_url, through(f"http://{proxy.address}"))
        for _ in range(3):
            body = orjson.loads(await chat(pool, mock_upstream.base_url))
            assert body["object"] == "chat.completion"
        await pool.aclose()
    origin = mock_upstream.base_url.removeprefix("http://")
    # One tunnel, kept alive for every request, to the origin named as host:port.
    assert [(c.target, c.headers["host"]) for c in proxy.seen] == [(origin, origin)]
    assert "proxy-authorization" not in proxy.seen[0].headers
    # The request went through the tunnel as the upstream receives it.
    assert bytes(proxy.relayed).startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


async def test_no_proxy_excludes_a_host_which_is_then_reached_directly(
    mock_upstream: ServerProcess,
) -> None:
    async with connect_proxy() as proxy:
        pool = pool_for(
            mock_upstream.base_url,
            through(f"http://{proxy.address}", no_proxy="api.example.com, 127.0.0.1"),
        )
        assert pool.tunnel is None  # decided once, for the pool
        await chat(pool, mock_upstream.base_url)
        await pool.aclose()
    assert proxy.seen == []


async def test_proxy_credentials_are_sent_as_basic_proxy_authorization(
    mock_upstream: ServerProcess,
) -> None:
    async with connect_proxy(credentials=GOOD_CREDENTIALS) as proxy:
        proxies = through(WITH_CREDENTIALS.format(address=proxy.address))
        pool = pool_for(mock_upstream.base_url, proxies)
        await chat(pool, mock_upstream.base_url)
        await pool.aclose()
    assert proxy.seen[0].headers["proxy-authorization"] == GOOD_CREDENTIALS
    # The credentials went to the proxy only, never through the tunnel to the upstream.
    assert b"proxy-authorization" not in bytes(proxy.relayed).lower()


async def test_a_407_is_the_pools_connect_failure_naming_the_status_never_the_password(
    mock_upstream: ServerProcess,
) -> None:
    async with connect_proxy(credentials="Basic bm90LXRoZXNl") as proxy:
        pool = pool_for(
            mock_upstream.base_url, through(WITH_CREDENTIALS.format(address=proxy.address))
        )
        with pytest.raises(UpstreamConnectError) as refused:
            await chat(pool, mock_upstream.base_url)
        assert pool.open == 0
        await pool.aclose()
        anonymous = pool_for(mock_upstream.base_url, through(f"http://{proxy.address}"))
        with pytest.raises(UpstreamConnectError) as asked:
            await chat(anonymous, mock_upstream.base_url)
    message = str(refused.value)
    assert f"the outbound proxy http://{proxy.address} (HTTP_PROXY)" in message
    assert "407 Proxy Authentication Required" in message
    assert "did not accept the credentials in HTTP_PROXY" in message
    for secret in ("s3cret", "p@ss", "p%40ss", GOOD_CREDENTIALS.split()[1]):
        assert secret not in message
        assert secret not in repr(refused.value)
    assert "give them in HTTP_PROXY as http://user:password@host:port" in str(asked.value)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n", "403 Forbidden"),
        (b"HTTP/1.0 502 Bad Gateway\r\n\r\n<html>cannot reach</html>", "502 Bad Gateway"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "answered CONNECT with no HTTP status"),
    ],
)
async def test_a_proxy_that_will_not_tunnel_is_the_pools_connect_failure(
    mock_upstream: ServerProcess, answer: bytes, expected: str
) -> None:
    async with connect_proxy(refuse=answer) as proxy:
        pool = pool_for(mock_upstream.base_url, through(f"http://{proxy.address}"))
        with pytest.raises(UpstreamConnectError, match=expected):
            await chat(pool, mock_upstream.base_url)
        assert pool.open == 0
        await pool.aclose()


async def test_an_unreachable_proxy_is_a_connect_failure_naming_it() -> None:
    address = f"127.0.0.1:{free_port()}"
    pool = pool_for("https://api.example.com", through(f"http://{address}"))
    with pytest.raises(
        UpstreamConnectError, match=f"http://{address} \\(HTTPS_PROXY\\) could not be reached"
    ):
        await chat(pool, "https://api.example.com")
    assert pool.open == 0


async def test_the_connect_timeout_covers_the_proxys_answer(mock_upstream: ServerProcess) -> None:
    async with connect_proxy(silent=True) as proxy:
        timeouts = Timeouts(connect=0.2, read=2.0, write=2.0, pool=2.0)
        pool = pool_for(
            mock_upstream.base_url, through(f"http://{proxy.address}"), timeouts=timeouts
        )
        with pytest.raises(UpstreamTimeout, match="through the outbound proxy"):
            await chat(pool, mock_upstream.base_url)
        assert pool.open == 0
        await pool.aclose()


async def https_through_a_proxy(folder: Path) -> None:
    server_tls, client_tls = tls_pair(folder)
    async with tls_upstream(server_tls) as url, connect_proxy() as proxy:
        pool = pool_for(url, through(f"http://{proxy.address}"), tls=client_tls)
        for _ in range(2):
            assert await chat(pool, url) == b"secured"
        assert pool.open == 1
        await pool.aclose()
        # The provider's certificate is verified inside the tunnel as without a proxy.
        untrusting = pool_for(
            url, through(f"http://{proxy.address}"), tls=ssl.create_default_context()
        )
        with pytest.raises(UpstreamConnectError, match="SSLCertVerificationError through"):
            await chat(untrusting, url)
        assert untrusting.open == 0
    assert [c.target for c in proxy.seen] == [url.removeprefix("https://")] * 2
    # TLS from end to end: the proxy relayed a handshake and records, never the request.
    assert bytes(proxy.relayed[:1]) == b"\x16"  # a TLS handshake record
    assert b"POST" not in bytes(proxy.relayed) and b"Bearer" not in bytes(proxy.relayed)


async def test_an_https_upstream_is_reached_with_tls_inside_the_tunnel(tmp_path: Path) -> None:
    await https_through_a_proxy(tmp_path)


def test_the_tunnel_works_on_uvloop_which_serves_the_gateway(tmp_path: Path) -> None:
    uvloop.run(https_through_a_proxy(tmp_path))


async def test_the_settings_proxy_reaches_the_provider_pool(mock_upstream: ServerProcess) -> None:
    provider = ProviderConfig(
        name="mock",
        type="openai",
        base_url=f"{mock_upstream.base_url}/v1",
        api_key=None,
        api_version=None,
        headers=(),
        max_connections=2,
        timeout_seconds=None,
    )
    async with connect_proxy() as proxy:
        settings = make_settings(http_proxy=f"http://{proxy.address}", no_proxy="")
        pool = upstream_pool(provider, connect=2.0, read=2.0, proxies=settings.outbound_proxies)
        await chat(pool, mock_upstream.base_url)
        await pool.aclose()
        bypassing = make_settings(http_proxy=f"http://{proxy.address}", no_proxy="127.0.0.1")
        direct = upstream_pool(provider, connect=2.0, read=2.0, proxies=bypassing.outbound_proxies)
        assert direct.tunnel is None
        # An https proxy setting covers https providers only.
        only_https = make_settings(https_proxy=f"http://{proxy.address}", no_proxy="")
        assert only_https.outbound_proxies.for_origin("http", "127.0.0.1", 80) is None
    assert len(proxy.seen) == 1


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "excluded"),
    [
        ("", "api.openai.com", 443, False),
        ("*", "api.openai.com", 443, True),
        ("openai.com", "api.openai.com", 443, True),
        ("openai.com", "openai.com", 443, True),
        ("openai.com", "notopenai.com", 443, False),
        (".openai.com", "openai.com", 443, True),
        (".openai.com", "api.openai.com", 443, True),
        ("*.openai.com", "api.openai.com", 443, True),
        ("OpenAI.com.", "API.openai.com", 443, True),
        ("localhost, 127.0.0.1", "127.0.0.1", 8080, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("10.0.0.0/8", "ten.example", 443, False),  # names are not resolved
        ("fd00::/8", "fd12::1", 443, True),
        ("::1", "::1", 443, True),
        ("10.0.0.0/8", "::ffff:10.0.0.1", 443, True),
        ("vllm.internal:8000", "vllm.internal", 8000, True),
        ("vllm.internal:8000", "vllm.internal", 443, False),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 8081, False),
        ("10.0.0.0/8:443", "10.9.9.9", 443, True),
    ],
)
def test_no_proxy_matches_names_suffixes_addresses_ranges_and_ports(
    no_proxy: str, host: str, port: int, excluded: bool
) -> None:
    assert parse_no_proxy(no_proxy).excludes(host, port) is excluded


@pytest.mark.parametrize(
    "entry", ["10.0.0.0/33", "host:port", "host:70000", "[::1", "a b", "user@host", "1:2:x"]
)
def test_a_bad_no_proxy_entry_is_named(entry: str) -> None:
    with pytest.raises(ValueError, match=repr(entry).replace("[", "\\[")):
        parse_no_proxy(f"localhost,{entry}")


def test_a_proxy_url_gives_the_address_and_basic_credentials_never_shown() -> None:
    proxy = parse_proxy_url("http://gateway:s3cret%20p%40ss@proxy.corp:3128/", "HTTPS_PROXY")
    assert (proxy.host, proxy.port, proxy.url) == ("proxy.corp", 3128, "http://proxy.corp:3128")
    assert proxy.authorization == GOOD_CREDENTIALS
    assert "s3cret" not in repr(proxy) and GOOD_CREDENTIALS not in repr(proxy)
    assert repr(proxy) == "OutboundProxy(host='proxy.corp', port=3128, variable='HTTPS_PROXY')"
    assert parse_proxy_url("proxy.corp:3128", "HTTPS_PROXY") == OutboundProxy(
        "proxy.corp", 3128, "HTTPS_PROXY"
    )
    assert parse_proxy_url("http://[fd00::1]", "HTTP_PROXY").url == "http://[fd00::1]:80"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://proxy.corp:3128", "only http:// proxy URLs are"),
        ("socks5://proxy.corp:1080", "only http:// proxy URLs are supported"),
        ("http://gateway:s3cret@proxy.corp:99999", "port that is not a number"),
        ("http://gateway:s3cret@proxy.corp:port", "port that is not a number"),
        ("http://:s3cret@proxy.corp:3128", "a password but no user name"),
        ("http://gateway:s3cret@proxy.corp:3128/path", "without a path"),
        ("http://", "names no proxy host"),
    ],
)
def test_a_bad_proxy_url_says_why_without_repeating_it(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_proxy_url(url, "HTTPS_PROXY")
    assert problem in str(raised.value)
    assert "s3cret" not in str(raised.value)
