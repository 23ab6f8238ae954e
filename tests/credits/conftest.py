"""The credits tests send traffic through the proxy too, so they reuse its fixtures."""

from tests.proxy.conftest import provider_settings, providers_file, proxy_client

__all__ = ["provider_settings", "providers_file", "proxy_client"]
