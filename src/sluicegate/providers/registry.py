"""Which adapter serves which provider type, and the one shared HTTP client per provider."""

from __future__ import annotations

import ssl
from functools import cache

import httpx

from sluicegate.providers.anthropic import AnthropicAdapter
from sluicegate.providers.base import Adapter
from sluicegate.providers.config import ProviderConfig
from sluicegate.providers.openai import AzureAdapter, OpenAIAdapter

# Idle upstream connections are kept this long; providers' load balancers drop them after ~60 s.
KEEPALIVE_SECONDS = 30.0
# Writing a request body to a provider never legitimately takes long.
WRITE_TIMEOUT_SECONDS = 30.0
# Pools per provider; see UpstreamClients. Measured with bench/proxy_overhead.py at c=64.
POOL_SHARDS = 8


def build_adapter(provider: ProviderConfig) -> Adapter:
    if provider.type == "anthropic":
        return AnthropicAdapter(provider)
    if provider.type == "azure":
        return AzureAdapter(provider)
    return OpenAIAdapter(provider)


class UpstreamClients:
    """The shared HTTP clients of one provider, for the life of the process (never one per
    request). httpx's pool does work proportional to its open connections on every request, which
    at high concurrency costs more than the request itself; a few smaller pools taken in turn keep
    each one short while sharing the connection limit."""

    __slots__ = ("_clients", "_next")

    def __init__(self, provider: ProviderConfig, *, connect: float, read: float) -> None:
        shards = max(1, min(POOL_SHARDS, provider.max_connections))
        per_shard = max(1, provider.max_connections // shards)
        self._clients = [_client(per_shard, connect=connect, read=read) for _ in range(shards)]
        self._next = 0

    def next(self) -> httpx.AsyncClient:
        client = self._clients[self._next]
        self._next = (self._next + 1) % len(self._clients)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context (httpx's defaults: certifi's CA bundle) for every upstream client of the
    process: building one reads the whole CA bundle, about 30 ms, and shards multiply clients."""
    return httpx.create_ssl_context()


def _client(max_connections: int, *, connect: float, read: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=_tls(),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        timeout=httpx.Timeout(
            connect=connect, read=read, write=WRITE_TIMEOUT_SECONDS, pool=connect
        ),
        follow_redirects=False,
        # Proxy variables of the host must not silently reroute provider traffic.
        trust_env=False,
    )
