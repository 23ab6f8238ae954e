"""The guard tests call the proxy too, so they reuse the proxy's providers and client fixtures."""

from tests.proxy.conftest import gateway_pool, provider_settings, providers_file, proxy_client

__all__ = ["gateway_pool", "provider_settings", "providers_file", "proxy_client"]
