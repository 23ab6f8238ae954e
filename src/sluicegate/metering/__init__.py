"""Usage events, the durable writer and drain worker, rollups, pricing of a request."""
