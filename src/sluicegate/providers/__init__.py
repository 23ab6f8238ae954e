"""Upstream providers: the adapter interface, one module per family, the model catalog and its
prices, the keep-alive transport, and token estimates for answers that report no usage."""
