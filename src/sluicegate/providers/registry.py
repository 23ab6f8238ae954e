"""Which adapter serves which provider type, and the one shared HTTP client per provider."""

from __future__ import annotations

import httpx

from sluicegate.providers.anthropic import AnthropicAdapter
from sluicegate.providers.base import Adapter
from sluicegate.providers.config import ProviderConfig
from sluicegate.providers.openai import AzureAdapter, OpenAIAdapter

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


def build_client(provider: ProviderConfig, *, connect: float, read: float) -> httpx.AsyncClient:
    """One pooled client per provider for the life of the process, never one per request."""
    return httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=provider.max_connections,
            max_keepalive_connections=provider.max_connections,
            keepalive_expiry=KEEPALIVE_SECONDS,
        ),
        timeout=httpx.Timeout(
            connect=connect, read=read, write=WRITE_TIMEOUT_SECONDS, pool=connect
        ),
        follow_redirects=False,
        # Proxy variables of the host must not silently reroute provider traffic.
        trust_env=False,
    )
