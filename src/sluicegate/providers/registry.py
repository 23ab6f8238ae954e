"""Which adapter serves which provider type, and the one upstream connection pool per provider."""

from __future__ import annotations

import ssl
from functools import cache

import httpx

from sluicegate.providers.anthropic import AnthropicAdapter
from sluicegate.providers.base import Adapter
from sluicegate.providers.config import ProviderConfig
from sluicegate.providers.openai import AzureAdapter, OpenAIAdapter
from sluicegate.providers.outbound_proxy import OutboundProxies
from sluicegate.providers.transport import Pool, Timeouts

# Idle upstream connections are kept this long; providers' load balancers drop them after ~60 s.
KEEPALIVE_SECONDS = 30.0
# Writing a request body to a provider never legitimately takes long.
WRITE_TIMEOUT_SECONDS = 30.0


def build_adapter(provider: ProviderConfig) -> Adapter:
    if provider.type == "anthropic":
        return AnthropicAdapter(provider)
    if provider.type == "azure":
        return AzureAdapter(provider)
    return OpenAIAdapter(provider)


def upstream_pool(
    provider: ProviderConfig,
    *,
    connect: float,
    read: float,
    proxies: OutboundProxies | None = None,
) -> Pool:
    """The provider's keep-alive pool for the life of the process (never one per request),
    connecting through the outbound proxy when `proxies` cover the provider's origin."""
    return Pool(
        provider.base_url,
        max_connections=provider.max_connections,
        timeouts=Timeouts(connect=connect, read=read, write=WRITE_TIMEOUT_SECONDS, pool=connect),
        keepalive_seconds=KEEPALIVE_SECONDS,
        tls=_tls(),
        proxies=proxies,
    )


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context (certifi's CA bundle, as httpx uses) for every upstream pool of the
    process: building one reads the whole CA bundle, about 30 ms."""
    return httpx.create_ssl_context()
