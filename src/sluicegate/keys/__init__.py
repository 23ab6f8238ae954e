"""API keys: create, digest, lookup for the proxy, lifecycle."""
