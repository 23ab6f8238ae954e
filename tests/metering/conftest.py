"""The metering tests reuse the proxy tests' providers file (the mock upstream's models)."""

from tests.proxy.conftest import providers_file

__all__ = ["providers_file"]
