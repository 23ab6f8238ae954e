"""Upstream providers: the adapter interface, one module per family, the model catalog."""
