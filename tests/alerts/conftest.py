"""The alerts tests call the proxy too, so they reuse the proxy's providers and client fixtures."""

from tests.proxy.conftest import provider_settings, providers_file, proxy_client

__all__ = ["provider_settings", "providers_file", "proxy_client"]
